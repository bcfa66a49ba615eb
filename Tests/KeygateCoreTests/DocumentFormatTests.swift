import Dispatch
import KeygateCore
import XCTest

/// The YAML composer, the JSON value and the small text helpers that stand in for Foundation's.
final class DocumentFormatTests: XCTestCase {
    func compose(_ text: String) throws -> YAMLNode? { try YAMLDocument.compose(text) }

    func testYAMLNodesKeepTextAndLines() throws {
        let root = try XCTUnwrap(try compose("# policy\nlisten: \"0.0.0.0:8080\"\nlimits:\n  rate: 10/s\n  burst: 20\nscopes: { a: [\"GET /x\", 'POST /y'] }\n"))
        guard case .mapping(let top) = root.content else { return XCTFail("not a mapping") }
        XCTAssertEqual(top.map { $0.key.text }, ["listen", "limits", "scopes"])
        XCTAssertEqual(top.map { $0.key.line }, [2, 3, 6])
        XCTAssertEqual(top[0].value.text, "0.0.0.0:8080")
        guard case .mapping(let limits) = top[1].value.content else { return XCTFail("limits") }
        XCTAssertEqual(limits.map { $0.value.text }, ["10/s", "20"])
        XCTAssertEqual(limits[1].value.line, 5)
        guard case .mapping(let scopes) = top[2].value.content, case .sequence(let routes) = scopes[0].value.content else { return XCTFail("scopes") }
        XCTAssertEqual(routes.map(\.text), ["GET /x", "POST /y"])
    }

    func testYAMLScalarsAreNotResolved() throws {
        let root = try XCTUnwrap(try compose("a: ~\nb:\nc: 0x10\nd: yes\ne: |\n  two\n  lines\n"))
        guard case .mapping(let m) = root.content else { return XCTFail("not a mapping") }
        XCTAssertEqual(m.map { $0.value.text }, ["~", "", "0x10", "yes", "two\nlines\n"])
    }

    func testYAMLAnchorsAndAliases() throws {
        let root = try XCTUnwrap(try compose("base: &ips [10.0.0.0/8, 192.168.0.0/16]\nother: *ips\n"))
        guard case .mapping(let m) = root.content, case .sequence(let ips) = m[1].value.content else { return XCTFail("alias") }
        XCTAssertEqual(ips.map(\.text), ["10.0.0.0/8", "192.168.0.0/16"])
        XCTAssertThrowsError(try compose("a: *nowhere\n"))
    }

    func testYAMLEmptyAndBadDocuments() throws {
        XCTAssertNil(try compose(""))
        XCTAssertNil(try compose("# only a comment\n"))
        XCTAssertThrowsError(try compose("listen: [\n")) { error in
            let e = error as! YAMLError
            XCTAssertTrue(e.problem.hasPrefix("YAML: "), e.problem)
            XCTAssertEqual(e.line, 2)
        }
        XCTAssertThrowsError(try compose("a: 1\n---\nb: 2\n")) { error in
            XCTAssertEqual((error as! YAMLError).line, 2)
        }
        XCTAssertThrowsError(try compose("a: 1\nb: 2\na: 3\n")) { error in
            XCTAssertEqual((error as! YAMLError).line, 3)
            XCTAssertEqual((error as! YAMLError).problem, "duplicate field \"a\"")
        }
        XCTAssertThrowsError(try compose(String(repeating: "[", count: 200) + String(repeating: "]", count: 200))) { error in
            XCTAssertTrue((error as! YAMLError).problem.contains("nested deeper"))
        }
        XCTAssertThrowsError(try compose("a: \"\u{1}\"\n"))
    }

    func testJSONValueRoundTrip() throws {
        let text = #"{"a":[1,2.5,"x/y",true,null],"b":{"c":"é"},"n":-3}"#
        let v = try XCTUnwrap(JSONValue.parse(Array(text.utf8)))
        XCTAssertEqual(v.object?["n"]?.int64, -3)
        XCTAssertEqual(v.object?["a"]?.array?[1].number, 2.5)
        XCTAssertEqual(v.object?["a"]?.array?[1].int64, nil)
        XCTAssertEqual(v.object?["a"]?.array?[4].isNull, true)
        XCTAssertEqual(v.object?["a"]?.strings, nil)
        XCTAssertEqual(String(decoding: try XCTUnwrap(v.encoded()), as: UTF8.self), text)
        XCTAssertNil(JSONValue.parse(Array("{".utf8)))
        XCTAssertNil(JSONValue.parseObject(Array("[1]".utf8)))
        XCTAssertNil(JSONValue.number(.nan).encoded())
    }

    func testDeeplyNestedJSONIsRefusedNotFollowed() {
        // A console request body is at most a few dozen KiB; this is deeper than any.
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        XCTAssertNil(JSONValue.parse(Array(deep.utf8)))
        let deepObject = String(repeating: "{\"a\":", count: 50_000) + "1" + String(repeating: "}", count: 50_000)
        XCTAssertNil(JSONValue.parse(Array(deepObject.utf8)))
        // The deepest the decoder takes, parsed where the console parses: a Dispatch worker.
        let allowed = String(repeating: "[", count: 500) + String(repeating: "]", count: 500)
        let done = expectation(description: "parsed on a worker thread")
        DispatchQueue.global().async {
            XCTAssertNotNil(JSONValue.parse(Array(allowed.utf8)))
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
    }

    func testJSONValueFromSwiftValues() throws {
        let missing: String? = nil
        let value: [String: Any] = ["s": "t", "i": 3, "b": false, "none": missing as Any, "some": Optional("x") as Any, "list": [1, 2], "o": ["k": [String]()]]
        let v = try XCTUnwrap(JSONValue.from(value))
        XCTAssertEqual(String(decoding: try XCTUnwrap(v.encoded()), as: UTF8.self), #"{"b":false,"i":3,"list":[1,2],"none":null,"o":{"k":[]},"s":"t","some":"x"}"#)
        struct Opaque {}
        XCTAssertNil(JSONValue.from(["x": Opaque()]))
    }

    func testPathText() {
        XCTAssertEqual(PathText.directory(of: "/a/b/c.yaml"), "/a/b")
        XCTAssertEqual(PathText.directory(of: "/c.yaml"), "/")
        XCTAssertEqual(PathText.directory(of: "c.yaml"), "")
        XCTAssertEqual(PathText.directory(of: "a/b/"), "a")
        XCTAssertEqual(PathText.join("/a", "b"), "/a/b")
        XCTAssertEqual(PathText.join("/a/", "b"), "/a/b")
        XCTAssertEqual(PathText.join("", "b"), "b")
        XCTAssertEqual(PathText.join("/", "b"), "/b")
        XCTAssertEqual(PathText.lastComponent("/a/keys.jsonl"), "keys.jsonl")
        XCTAssertEqual(PathText.lastComponent("keys.jsonl"), "keys.jsonl")
    }

    func testTrimmingAndFormDecoding() {
        XCTAssertEqual("  a b \t".trimmed(), "a b")
        XCTAssertEqual("   ".trimmed(), "")
        XCTAssertEqual("//x//".trimmed { $0 == "/" }, "x")
        // The console reads its query with the gate's own parser and decoder.
        func decoded(_ s: String) -> String {
            let bytes = Array(s.utf8)
            return bytes.withUnsafeBufferPointer { String(decoding: QueryCredential.decode($0, 0..<bytes.count), as: UTF8.self) }
        }
        XCTAssertEqual(decoded("a%20b%2Fc"), "a b/c")
        XCTAssertEqual(decoded("caf%C3%A9"), "café")
        XCTAssertEqual(decoded("a+b"), "a b")
        XCTAssertEqual(decoded("50%"), "50%")
        XCTAssertEqual(decoded("%zz"), "%zz")
    }
}
