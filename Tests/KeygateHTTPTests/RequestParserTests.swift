import KeygateHTTP
import XCTest

/// Feeds raw bytes through the scanner and parser the way a connection does.
func parseRequest(_ text: String, limits: RequestLimits = RequestLimits()) -> Result<(RequestHead, Int), HTTPParseError> {
    let bytes = Array(text.utf8)
    var scanner = HeadScanner(maxHeadBytes: limits.maxHeadBytes)
    do {
        let end = try bytes.withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
        guard let end else { return .failure(HTTPParseError(-1, "incomplete")) }
        let start = scanner.start
        let head = try bytes.withUnsafeBytes { (raw) throws(HTTPParseError) -> RequestHead in
            try RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[start..<end]), limits: limits)
        }
        return .success((head, end))
    } catch let e as HTTPParseError {
        return .failure(e)
    } catch {
        return .failure(HTTPParseError(-2, "\(error)"))
    }
}

final class RequestParserTests: XCTestCase {
    func status(_ text: String, limits: RequestLimits = RequestLimits()) -> Int {
        switch parseRequest(text, limits: limits) {
        case .success: return 200
        case .failure(let e): return e.status
        }
    }

    /// Every byte value at every offset of a 19-byte value (so across and inside the eight-byte
    /// steps of the value check): refused exactly when it is a control other than a tab, or DEL.
    func testFieldValueBytesAtEveryOffset() {
        for b in 0...255 where b != 0x0A && b != 0x0D {
            for at in 1..<18 {
                var value = Array(repeating: UInt8(ascii: "v"), count: 19)
                value[at] = UInt8(b)
                let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\nX-T: ".utf8) + value + Array("\r\n\r\n".utf8)
                var scanner = HeadScanner()
                let parsed = bytes.withUnsafeBytes { raw -> Bool in
                    guard let end = try? scanner.scan(raw) else { return false }
                    return (try? RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[scanner.start..<end]))) != nil
                }
                let allowed = b == 0x09 || (b >= 0x20 && b != 0x7F)
                XCTAssertEqual(parsed, allowed, "byte \(b) at \(at)")
            }
        }
    }

    /// Every byte value in a field name and in a request target, against the RFC sets.
    func testNameAndTargetBytes() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        let target = Set("-._~:/?[]@!$&'()*+,;=%0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        func parses(_ bytes: [UInt8]) -> Bool {
            var scanner = HeadScanner()
            return bytes.withUnsafeBytes { raw -> Bool in
                guard let end = try? scanner.scan(raw) else { return false }
                return (try? RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[scanner.start..<end]))) != nil
            }
        }
        for b in 0...255 where b != 0x0A && b != 0x0D && b != UInt8(ascii: ":") {
            let name = Array("GET / HTTP/1.1\r\nHost: a\r\nX-".utf8) + [UInt8(b)] + Array("T: v\r\n\r\n".utf8)
            XCTAssertEqual(parses(name), tchar.contains(UInt8(b)), "byte \(b) in a field name")
        }
        // `#` ends the target (a fragment is never sent), and `%` must start an escape.
        for b in 0...255 where b != 0x0A && b != 0x0D && b != 0x20 && b != UInt8(ascii: "%") {
            let line = Array("GET /a".utf8) + [UInt8(b)] + Array("b HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            XCTAssertEqual(parses(line), target.contains(UInt8(b)), "byte \(b) in a target")
        }
    }

    func testSimpleGet() throws {
        let (head, end) = try parseRequest("GET /suppliers?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Api-Key: abc\r\n\r\nNEXT").get()
        XCTAssertEqual(end, 66)
        XCTAssertEqual(head.methodString(), "GET")
        XCTAssertEqual(head.pathString(), "/suppliers")
        XCTAssertEqual(head.bytes.string(head.target), "/suppliers?x=1")
        XCTAssertEqual(head.version, .http11)
        XCTAssertEqual(head.fields.count, 2)
        XCTAssertEqual(head.framing, .none)
        XCTAssertTrue(head.keepAlive)
        XCTAssertEqual(head.bytes.string(head.fields[1].value), "abc")
    }

    func testIncompleteHeadWaits() {
        XCTAssertEqual(status("GET / HTTP/1.1\r\nHost: a\r\n"), -1)
    }

    /// The scanner's verdict on a head (its end, or the error) whatever reads it came in: each
    /// head is fed whole, then grown one read at a time from every cut point.
    func testScannerVerdictDoesNotDependOnTheReads() {
        func verdict(_ bytes: [UInt8], cut: Int?) -> String {
            var scanner = HeadScanner()
            do {
                if let cut {
                    let first = try Array(bytes[0..<cut]).withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
                    if let first { return "end \(first)" }
                }
                let end = try bytes.withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
                return end.map { "end \($0)" } ?? "incomplete"
            } catch let e as HTTPParseError {
                return "error \(e.status)"
            } catch {
                return "unexpected \(error)"
            }
        }
        let heads = [
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",  // bare CR inside a value
            "GET / HTTP/1.1\r\nHost: a\r\n\rX: b\r\n\r\n",  // bare CR starting a line
            "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",  // bare LF
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            // An over-long line that is complete, then a head still arriving: refused at once,
            // not only when a read happens to end inside the long line.
            "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "a", count: 9000) + "\r\nY: b",
            "GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a",
        ]
        for text in heads {
            let bytes = Array(text.utf8)
            let whole = verdict(bytes, cut: nil)
            for cut in 1..<bytes.count {
                XCTAssertEqual(verdict(bytes, cut: cut), whole, "\(text.debugDescription) cut at \(cut)")
            }
        }
        XCTAssertEqual(verdict(Array(heads[0].utf8), cut: 30), "error 400")
        XCTAssertEqual(verdict(Array(heads[6].utf8), cut: nil), "error 431")
        XCTAssertEqual(verdict(Array(heads[7].utf8), cut: nil), "error 414")
        // The parser refuses them on its own too, should a head ever reach it unscanned.
        for text in heads[0..<4] {
            XCTAssertThrowsError(try Array(text.utf8).withUnsafeBytes { try RequestParser.parse($0) }, text.debugDescription)
        }
    }

    func testOneLeadingEmptyLineIsIgnored() {
        XCTAssertEqual(status("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 200)
        XCTAssertEqual(status("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400)
    }

    func testFramingDecisions() throws {
        XCTAssertEqual(try parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").get().0.framing, .contentLength(5))
        XCTAssertEqual(try parseRequest("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").get().0.framing, .chunked)
        XCTAssertEqual(try parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").get().0.framing, .none)
    }

    /// Every rejection of HTTP.md rules 1–5, with the status it answers.
    func testRejections() {
        let cases: [(String, String, Int)] = [
            ("CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("two CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("CL plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400),
            ("CL space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", 400),
            ("CL 16 digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000\r\n\r\n", 400),
            ("xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
            ("chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501),
            ("identity, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501),
            ("two TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("space before colon", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
            ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            ("bare LF in head", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("bare LF end", "GET / HTTP/1.1\r\nHost: a\n\n", 400),
            ("bare CR", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
            ("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400),
            ("control in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{1}b\r\n\r\n", 400),
            ("DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7F}b\r\n\r\n", 400),
            ("no Host", "GET / HTTP/1.1\r\n\r\n", 400),
            ("two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
            ("Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("Host with comma", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400),
            ("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            ("http lower", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
            ("HTTP/0.9", "GET /\r\n\r\n", 0),
            ("double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
            ("tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
            ("asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("high byte in target", "GET /\u{E9} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("bad percent", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("absolute-form other host", "GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("method too long", "\(String(repeating: "G", count: 33)) / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("empty name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400),
            ("no colon", "GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 400),
            ("bad expect", "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", 417),
            ("Connection names Host", "GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n", 400),
            ("Connection names CL", "GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n", 400),
        ]
        for (name, text, expected) in cases {
            XCTAssertEqual(status(text), expected, name)
        }
    }

    func testSizeLimits() {
        let longTarget = "GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        XCTAssertEqual(status(longTarget), 414)
        let longHeader = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n"
        XCTAssertEqual(status(longHeader), 431)
        var many = "GET / HTTP/1.1\r\nHost: a\r\n"
        for i in 0..<101 { many += "X-\(i): v\r\n" }
        XCTAssertEqual(status(many + "\r\n"), 431)
        var big = "GET / HTTP/1.1\r\nHost: a\r\n"
        for i in 0..<40 { big += "X-\(i): " + String(repeating: "b", count: 1000) + "\r\n" }
        XCTAssertEqual(status(big + "\r\n"), 431)
    }

    func testEndlessRequestLineIsRefusedBeforeItEnds() {
        var scanner = HeadScanner()
        let bytes = Array(("GET /" + String(repeating: "a", count: 9000)).utf8)
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try scanner.scan($0) }) { e in
            XCTAssertEqual((e as? HTTPParseError)?.status, 414)
        }
    }

    func testAbsoluteFormIsRewritten() throws {
        let (head, _) = try parseRequest("GET http://a.example:8080/x?y HTTP/1.1\r\nHost: a.example:8080\r\n\r\n").get()
        XCTAssertEqual(head.bytes.string(head.target), "/x?y")
        let (root, _) = try parseRequest("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n").get()
        XCTAssertEqual(root.bytes.string(root.target), "/")
    }

    func testAsteriskWithOptions() {
        XCTAssertEqual(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200)
    }

    func testConnectionOptions() throws {
        let (head, _) = try parseRequest("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n").get()
        XCTAssertFalse(head.keepAlive)
        XCTAssertEqual(head.connectionOptions.count, 1)
        XCTAssertTrue(head.isConnectionOption(head.fields[2].name))
        let (old, _) = try parseRequest("GET / HTTP/1.0\r\n\r\n").get()
        XCTAssertFalse(old.keepAlive)
        let (oldKeep, _) = try parseRequest("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").get()
        XCTAssertTrue(oldKeep.keepAlive)
    }

    func testExpectContinue() throws {
        let (head, _) = try parseRequest("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").get()
        XCTAssertTrue(head.expectContinue)
    }

    func testPipelinedRequestsParseOneAfterAnother() throws {
        var bytes = Array("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        var paths: [String] = []
        var scanner = HeadScanner()
        while !bytes.isEmpty {
            guard let end = try bytes.withUnsafeBytes({ try scanner.scan($0) }) else { break }
            let start = scanner.start
            let head = try bytes.withUnsafeBytes { try RequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
            paths.append(head.pathString())
            bytes.removeFirst(end)
            scanner.reset()
        }
        XCTAssertEqual(paths, ["/1", "/2", "/3"])
    }

    func testFieldValuesAreTrimmedAndKeepObsText() throws {
        let (head, _) = try parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX-Name: \t Zoë \t\r\n\r\n").get()
        XCTAssertEqual(head.bytes.string(head.fields[1].value), "Zoë")
    }
}
