import Foundation
import KeygateHTTP
import XCTest

/// Replays the raw-byte fixtures in tests/fixtures/http (shared with the over-the-socket test
/// and `make conformance`) through the parser and chunked decoder.
final class FixtureTests: XCTestCase {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../tests/fixtures/http").standardized

    func testParseLayerFixtures() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.folder.path).filter { $0.hasSuffix(".http") }.sorted()
        XCTAssertGreaterThan(names.count, 40)
        var checked = 0
        for name in names {
            let data = try Data(contentsOf: Self.folder.appendingPathComponent(name))
            let newline = data.firstIndex(of: 0x0A)!
            let header = String(decoding: data[..<newline], as: UTF8.self).split(separator: " ")
            guard header.count == 4, header[3] == "parse", let expected = Int(header[2]) else { continue }
            let raw = Array(data[(newline + 1)...])
            XCTAssertEqual(status(raw), expected, name)
            checked += 1
        }
        XCTAssertGreaterThan(checked, 35)
    }

    /// 200 when the head parses and any chunked body decodes, else the rejection's status.
    func status(_ raw: [UInt8]) -> Int {
        var scanner = HeadScanner()
        do {
            guard let end = try raw.withUnsafeBytes({ try scanner.scan($0) }) else { return -1 }
            let start = scanner.start
            let head = try raw.withUnsafeBytes { try RequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
            if head.framing == .chunked {
                var decoder = ChunkedDecoder()
                _ = try raw[end...].withUnsafeBytes { try decoder.decode($0) { _ in } }
                if !decoder.isDone { return -1 }
            }
            return 200
        } catch let e as HTTPParseError {
            return e.status
        } catch {
            return -2
        }
    }
}
