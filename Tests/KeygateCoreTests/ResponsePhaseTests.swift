import KeygateCore
import KeygateHTTP
import XCTest

/// The response phase without sockets: the client's head, the body's re-framing, and the
/// relay that drives both.
final class ResponsePhaseTests: XCTestCase {
    func response(_ text: String, requestWasHead: Bool = false) -> ResponseHead {
        let bytes = Array(text.utf8)
        var scanner = HeadScanner()
        let end = try! bytes.withUnsafeBytes { try scanner.scan($0) }!
        return try! bytes.withUnsafeBytes { try ResponseParser.parse(UnsafeRawBufferPointer(rebasing: $0[0..<end]), requestWasHead: requestWasHead) }
    }

    func downstream(_ r: ResponseHead, _ request: RequestHead, keepAlive: Bool = true, rate: String = "") -> (String, DownstreamHead.Plan) {
        var out: [UInt8] = []
        let plan = DownstreamHead.append(r, request: request, keepAlive: keepAlive, rateHeaders: Array(rate.utf8), requestID: Array("rid".utf8), to: &out)
        return (String(decoding: out, as: UTF8.self), plan)
    }

    func testHopByHopRemovedAndOurFramingSet() {
        let r = response(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: p\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n"
                + "Upgrade: h2c\r\nServer: app\r\n\r\n")
        let (head, plan) = downstream(r, Fixtures.get("/"), rate: "RateLimit-Limit: 10\r\n")
        XCTAssertEqual(head, "HTTP/1.1 200 OK\r\nServer: app\r\nContent-Length: 5\r\nRateLimit-Limit: 10\r\nX-Request-Id: rid\r\n\r\n")
        XCTAssertEqual(plan, DownstreamHead.Plan(keepAlive: true, chunkToClient: false))
    }

    func testChunkedForHTTP11AndCloseForHTTP10() {
        let r = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        let (h11, p11) = downstream(r, Fixtures.get("/"))
        XCTAssertTrue(h11.contains("Transfer-Encoding: chunked\r\n"))
        XCTAssertTrue(p11.chunkToClient && p11.keepAlive)
        let (h10, p10) = downstream(r, Fixtures.head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        XCTAssertFalse(h10.contains("Transfer-Encoding"))
        XCTAssertTrue(h10.contains("Connection: close\r\n"))
        XCTAssertFalse(p10.chunkToClient || p10.keepAlive)
    }

    func testHeadAnd304KeepTheirLengthAnd204GetsNone() {
        let head = response("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", requestWasHead: true)
        XCTAssertTrue(downstream(head, Fixtures.get("/", method: "HEAD")).0.contains("Content-Length: 99\r\n"))
        XCTAssertTrue(downstream(response("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"), Fixtures.get("/")).0.contains("Content-Length: 7\r\n"))
        XCTAssertFalse(downstream(response("HTTP/1.1 204 No Content\r\n\r\n"), Fixtures.get("/")).0.contains("Content-Length"))
        let (closing, plan) = downstream(response("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: app\r\n\r\n"), Fixtures.get("/"), keepAlive: false)
        XCTAssertTrue(closing.contains("Connection: close\r\n"))
        XCTAssertTrue(closing.contains("X-Request-Id: app\r\n") && !closing.contains("rid"))
        XCTAssertFalse(plan.keepAlive)
    }

    func collect(_ f: ((WriteParts) -> Void) throws -> Void) rethrows -> String {
        var out: [UInt8] = []
        try f { parts in for p in parts { out.append(contentsOf: p) } }
        return String(decoding: out, as: UTF8.self)
    }

    func testReframerPassesLengthAndRechunks() throws {
        var length = BodyReframer(.contentLength(5), chunkOutput: false)
        var used = 0
        let text = try collect { emit in used = try Array("helloNEXT".utf8).withUnsafeBytes { try length.feed($0, emit: emit) } }
        XCTAssertEqual(text, "hello")
        XCTAssertEqual(used, 5)
        XCTAssertTrue(length.isDone)

        var chunked = BodyReframer(.chunked, chunkOutput: true)
        let wire = "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\nNEXT"
        let rechunked = try collect { emit in used = try Array(wire.utf8).withUnsafeBytes { try chunked.feed($0, emit: emit) } }
        XCTAssertEqual(rechunked, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")  // no extension, no trailer: our framing
        XCTAssertEqual(used, wire.utf8.count - 4)
        XCTAssertEqual(chunked.payloadBytes, 5)

        var untilClose = BodyReframer(.untilClose, chunkOutput: true)
        var text2 = try collect { emit in _ = try Array("ab".utf8).withUnsafeBytes { try untilClose.feed($0, emit: emit) } }
        text2 += collect { emit in XCTAssertTrue(untilClose.finishAtClose(emit: emit)) }
        XCTAssertEqual(text2, "2\r\nab\r\n0\r\n\r\n")

        var cut = BodyReframer(.contentLength(10), chunkOutput: false)
        _ = try collect { emit in _ = try Array("abc".utf8).withUnsafeBytes { try cut.feed($0, emit: emit) } }
        XCTAssertFalse(collect { emit in XCTAssertFalse(cut.finishAtClose(emit: emit)) }.count > 0)
    }

    func testRelaySkipsInterimHeadsAndSendsHeadWithFirstBytes() throws {
        var relay = ResponseRelay(requestWasHead: false)
        let context = ResponseRelay.Context(requestVersion: Fixtures.get("/").version, keepAlive: true, rateHeaders: [], requestID: Array("r".utf8))
        var writes: [String] = []
        var scratch: [UInt8] = []
        func feed(_ s: String) throws {
            try Array(s.utf8).withUnsafeBytes { raw in
                try relay.feed(raw, context: { context }, headScratch: &scratch) { parts in
                    writes.append(parts.map { String(decoding: $0, as: UTF8.self) }.joined())
                }
            }
        }
        try feed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le")
        XCTAssertFalse(relay.headDone)
        XCTAssertTrue(relay.hasPartialHead)
        try feed("ngth: 4\r\n\r\nab")
        XCTAssertEqual(writes, ["HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Request-Id: r\r\n\r\nab"])  // one write
        try feed("cd")
        XCTAssertTrue(relay.isComplete)
        XCTAssertEqual(relay.bytesOut, 4)
        XCTAssertFalse(relay.trailingGarbage)
        try feed("junk")
        XCTAssertTrue(relay.trailingGarbage)
    }

    /// The client gets the same bytes, and the relay reaches the same verdict, whatever reads
    /// the upstream's answer came in: each answer is fed whole, then cut in two at every byte.
    func testRelayOutcomeDoesNotDependOnTheReads() {
        let context = ResponseRelay.Context(
            requestVersion: Fixtures.get("/").version, keepAlive: true, rateHeaders: [], requestID: Array("r".utf8), upgrade: true)
        // One head storage for every answer, as a connection keeps it: what an earlier answer
        // left in it must never reach a client.
        var scratch = Array("HTTP/1.1 999 Stale\r\nX-Left: over\r\n\r\n".utf8)
        func outcome(_ bytes: [UInt8], head: Bool, cut: Int?) -> String {
            var relay = ResponseRelay(requestWasHead: head)
            var client: [UInt8] = []
            var tunnel: [UInt8] = []
            let pieces = cut.map { [Array(bytes[0..<$0]), Array(bytes[$0...])] } ?? [bytes]
            for piece in pieces {
                if relay.switched {
                    tunnel += piece
                    continue
                }
                do {
                    try piece.withUnsafeBytes { raw in
                        try relay.feed(raw, context: { context }, headScratch: &scratch) { parts in
                            for p in parts { client += p }
                        }
                    }
                } catch {
                    return "failed: \(error)"
                }
                if relay.switched { tunnel += relay.tunnelLeftover }
            }
            let shown = String(decoding: client, as: UTF8.self).debugDescription
            return "\(relay.status) complete=\(relay.isComplete) garbage=\(relay.trailingGarbage) client=\(shown) tunnel=\(tunnel)"
        }
        let answers: [(String, Bool)] = [
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", false),
            ("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 9\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\u{81}\u{05}hello", false),
            ("HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 1\r\n\r\nz", false),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false),
        ]
        for (text, head) in answers {
            let bytes = Array(text.utf8)
            let whole = outcome(bytes, head: head, cut: nil)
            for cut in 1..<bytes.count {
                XCTAssertEqual(outcome(bytes, head: head, cut: cut), whole, "\(text.debugDescription) cut at \(cut)")
            }
        }
    }

    func testRelayRefusesASwitchAndBadFraming() {
        var relay = ResponseRelay(requestWasHead: false)
        let context = ResponseRelay.Context(requestVersion: Fixtures.get("/").version, keepAlive: true, rateHeaders: [], requestID: [])
        XCTAssertThrowsError(try Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".utf8).withUnsafeBytes { raw in
            var scratch: [UInt8] = []
            try relay.feed(raw, context: { context }, headScratch: &scratch) { _ in }
        })
        var chunked = ResponseRelay(requestWasHead: false)
        XCTAssertThrowsError(try Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8).withUnsafeBytes { raw in
            var scratch: [UInt8] = []
            try chunked.feed(raw, context: { context }, headScratch: &scratch) { _ in }
        })
    }

    func testAdmissionOrder() throws {
        let key = KeyFormat.generate(prefix: "kg", id: "DDDDDDDD").key
        let policy = try Fixtures.policy("limits: {max_body_bytes: 10}\n")
        let s = Snapshot(policy: policy, records: [Fixtures.record(key, id: "DDDDDDDD") { $0.rate = "1/s"; $0.burst = 1 }], geoip: nil)
        func admit(_ head: RequestHead) -> Admission.Verdict {
            var d = Gate.decide(head, peer: IPAddress("192.0.2.1")!, snapshot: s, nowMillis: Timestamp.nowMillis())
            return Admission.admit(head, decision: &d, snapshot: s, nowNanos: 1_000_000_000, wallMillis: Timestamp.nowMillis())
        }
        // Malformed beats unknown key; size beats the key check.
        XCTAssertEqual(admit(Fixtures.get("/a%2fb")), .refuse(status: 400, message: "the path holds an encoded / or \\ (%2F, %5C), which the upstream may decode differently"))
        guard case .refuse(413, _) = admit(Fixtures.get("/", ["Content-Length": "11"], method: "POST")) else { return XCTFail() }
        guard case .deny(.missing_key, _, _) = admit(Fixtures.get("/")) else { return XCTFail() }
        guard case .forward(let headers) = admit(Fixtures.get("/", ["x-api-key": key])) else { return XCTFail() }
        XCTAssertTrue(String(decoding: headers, as: UTF8.self).hasPrefix("RateLimit-Limit: 1\r\n"))
        guard case .deny(.rate_limited, let retry, _) = admit(Fixtures.get("/", ["x-api-key": key])) else { return XCTFail() }
        XCTAssertGreaterThanOrEqual(retry, 1)
    }
}

final class FieldLineTests: XCTestCase {
    func testFieldLinesAreCopiedOrNormalised() {
        let head = Fixtures.head("GET / HTTP/1.1\r\nHost: g\r\nX-A:1\r\nX-B:   two  \r\nX-C: three\r\nX-Empty:\r\n\r\n")
        var out: [UInt8] = []
        head.bytes.withUnsafeBufferPointer { p in
            for f in head.fields { out.appendFieldLine(p, f) }
        }
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "Host: g\r\nX-A: 1\r\nX-B: two\r\nX-C: three\r\nX-Empty: \r\n")
    }
}
