import KeygateHTTP
import XCTest

final class WritePartsTests: XCTestCase {
    func testPartsKeepTheirOrderWhenAHeadIsPutInFront() {
        let head = Array("HEAD".utf8), size = Array("5\r\n".utf8), data = Array("hello".utf8), crlf = Array("\r\n".utf8)
        head.withUnsafeBytes { h in
            size.withUnsafeBytes { s in
                data.withUnsafeBytes { d in
                    crlf.withUnsafeBytes { c in
                        let one = WriteParts(d)
                        XCTAssertEqual(one.count, 1)
                        XCTAssertEqual(one.byteCount, 5)
                        let chunk = WriteParts(s, d, c)
                        let all = chunk.prepending(h)
                        XCTAssertEqual(all.count, 4)
                        XCTAssertEqual(all.byteCount, 14)
                        XCTAssertEqual(all.flatMap { Array($0) }, head + size + data + crlf)
                        XCTAssertEqual(one.prepending(h).flatMap { Array($0) }, head + data)
                        XCTAssertEqual(Array(chunk.indices), [0, 1, 2])
                    }
                }
            }
        }
    }
}
