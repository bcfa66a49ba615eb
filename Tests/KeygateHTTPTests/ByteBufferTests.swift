import KeygateHTTP
import XCTest

final class ByteBufferTests: XCTestCase {
    func testAppendsGrowAndKeepEverything() {
        let b = ByteBuffer(capacity: 4)
        var sink = b
        sink.appendLiteral("hello, ")
        sink.append(UInt8(ascii: "w"))
        sink.appendBytes(Array("orld".utf8))
        let big = [UInt8](repeating: 0x41, count: 10_000)
        sink.appendBytes(big)
        XCTAssertEqual(b.count, 12 + 10_000)
        XCTAssertEqual(Array(b.bytes.prefix(12)), Array("hello, world".utf8))
        XCTAssertTrue(b.bytes.dropFirst(12).allSatisfy { $0 == 0x41 })
        b.removeAll()
        XCTAssertEqual(b.count, 0)
        sink.appendLiteral("again")
        XCTAssertEqual(Array(b.bytes), Array("again".utf8))
    }

    func testArraysAreSinksToo() {
        var a: [UInt8] = []
        a.appendLiteral("x=")
        a.appendBytes([0x31, 0x32])
        XCTAssertEqual(a, Array("x=12".utf8))
    }
}
