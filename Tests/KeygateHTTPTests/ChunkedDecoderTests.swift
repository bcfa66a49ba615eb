import KeygateHTTP
import XCTest

final class ChunkedDecoderTests: XCTestCase {
    /// Decodes `text`, optionally fed in pieces of `step` bytes.
    func decode(_ text: String, step: Int = Int.max) -> Result<(String, Int), HTTPParseError> {
        let bytes = Array(text.utf8)
        var decoder = ChunkedDecoder()
        var body: [UInt8] = []
        var consumed = 0
        do {
            while consumed < bytes.count && !decoder.isDone {
                let end = min(bytes.count, consumed + step)
                let used = try bytes[consumed..<end].withUnsafeBytes { raw in
                    try decoder.decode(raw) { body.append(contentsOf: $0) }
                }
                consumed += used
                if used < end - (consumed - used) { break }
            }
        } catch let e as HTTPParseError {
            return .failure(e)
        } catch {
            return .failure(HTTPParseError(-2, "\(error)"))
        }
        guard decoder.isDone else { return .failure(HTTPParseError(-1, "incomplete")) }
        return .success((String(decoding: body, as: UTF8.self), consumed))
    }

    func testBasic() throws {
        let (body, used) = try decode("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET").get()
        XCTAssertEqual(body, "hello world")
        XCTAssertEqual(used, 26)
    }

    func testByteByByte() throws {
        XCTAssertEqual(try decode("5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n", step: 1).get().0, "hello0123456789")
    }

    func testExtensionsAndTrailers() throws {
        XCTAssertEqual(try decode("5;name=value;flag\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n").get().0, "hello")
        XCTAssertEqual(try decode("5 ; q=\"a b\"\r\nhello\r\n0\r\n\r\n").get().0, "hello")
    }

    func testRejections() {
        let cases: [(String, String)] = [
            ("no digits", "\r\nhello\r\n0\r\n\r\n"),
            ("bad digit", "g\r\nhello\r\n0\r\n\r\n"),
            ("17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
            ("bare LF after size", "5\nhello\r\n0\r\n\r\n"),
            ("missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n"),
            ("bare LF after data", "5\r\nhello\n0\r\n\r\n"),
            ("bad extension", "5;=x\r\nhello\r\n0\r\n\r\n"),
            ("extension with CTL", "5;a=\u{1}\r\nhello\r\n0\r\n\r\n"),
            ("bad trailer", "5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n"),
            ("bare LF in trailer", "5\r\nhello\r\n0\r\nX: y\n\r\n"),
            ("negative size", "-5\r\nhello\r\n0\r\n\r\n"),
            ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ]
        for (name, text) in cases {
            switch decode(text) {
            case .success: XCTFail("\(name): accepted")
            case .failure(let e): XCTAssertEqual(e.status, 400, name)
            }
        }
    }

    func testLongExtensionRefused() {
        let text = "5;" + String(repeating: "a", count: 1100) + "\r\nhello\r\n0\r\n\r\n"
        if case .success = decode(text) { XCTFail("a 1 KiB extension must be refused") }
    }

    func testHugeChunkSizeIsRefusedNotOverflowed() {
        if case .success = decode("ffffffffffffffff\r\nx") { XCTFail("accepted") }
    }

    func testEncoderHeader() {
        var out: [UInt8] = []
        ChunkedEncoder.appendChunkHeader(255, to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "ff\r\n")
        out = []
        ChunkedEncoder.appendChunkHeader(65536, to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "10000\r\n")
    }
}
