import KeygateHTTP
import XCTest

final class ResponseParserTests: XCTestCase {
    func parse(_ text: String, head: Bool = false) throws -> ResponseHead {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBytes { try ResponseParser.parse($0, requestWasHead: head) }
    }

    func testFraming() throws {
        XCTAssertEqual(try parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").framing, .contentLength(5))
        XCTAssertEqual(try parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing, .chunked)
        XCTAssertEqual(try parse("HTTP/1.1 200 OK\r\n\r\n").framing, .untilClose)
        XCTAssertEqual(try parse("HTTP/1.1 204 No Content\r\n\r\n").framing, .none)
        XCTAssertEqual(try parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").framing, .none)
        XCTAssertEqual(try parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head: true).framing, .none)
        XCTAssertTrue(try parse("HTTP/1.1 100 Continue\r\n\r\n").isInterim)
    }

    func testKeepAlive() throws {
        XCTAssertTrue(try parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keepAlive)
        XCTAssertFalse(try parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keepAlive)
        XCTAssertFalse(try parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keepAlive)
        XCTAssertFalse(try parse("HTTP/1.1 200 OK\r\n\r\n").keepAlive)
    }

    func testUpstreamMistakesAre502() {
        for text in ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "ICY 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]
        {
            XCTAssertThrowsError(try parse(text)) { XCTAssertEqual(($0 as? HTTPParseError)?.status, 502, text) }
        }
    }

    func testReasonPhraseIsOptional() throws {
        XCTAssertEqual(try parse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status, 200)
    }
}
