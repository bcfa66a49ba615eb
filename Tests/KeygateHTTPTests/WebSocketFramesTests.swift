import KeygateHTTP
import XCTest

final class WebSocketFramesTests: XCTestCase {
    /// Frames of each header size (7-bit, 16-bit and 64-bit lengths), masked and not.
    func stream() -> (bytes: [UInt8], ends: [Int]) {
        var bytes: [UInt8] = []
        var ends: [Int] = []
        for (length, masked) in [(5, false), (70_000, true), (126, false), (0, true), (20_000, false), (65_535, true)] {
            var frame = WebSocketFrames.serverFrame(first: 0x82, payload: [UInt8](repeating: 7, count: length))
            if masked {
                frame[1] |= 0x80
                let headerEnd = frame.count - length
                frame.insert(contentsOf: [1, 2, 3, 4], at: headerEnd)
            }
            bytes += frame
            ends.append(bytes.count)
        }
        return (bytes, ends)
    }

    /// The gate's splice walk: it moves unseen what `unseenLimit` allows (at most `cap`),
    /// knowing the 14 bytes a peek shows, and reads one byte where it allows nothing (a header
    /// cut short). Boundaries must fall where the frames end, as when every byte is read.
    func testASplicedWalkSeesTheSameBoundariesAsReadingEveryByte() {
        let (bytes, ends) = stream()
        for cap in [1, 3, 14, 100, 4096, 1 << 20] {
            var frames = WebSocketFrames()
            var at = 0
            var boundaries: [Int] = []
            bytes.withUnsafeBytes { raw in
                while at < raw.count {
                    let peek = UnsafeRawBufferPointer(rebasing: raw[at..<min(at + 14, raw.count)])
                    let take = min(frames.unseenLimit(next: peek).map { Int(min($0, UInt64(cap))) } ?? 1, raw.count - at)
                    frames.advance(seen: peek, count: take)
                    at += take
                    if frames.atBoundary { boundaries.append(at) }
                }
            }
            XCTAssertEqual(boundaries, ends, "cap \(cap)")
        }
    }

    /// Cut anywhere, the stream's next boundary is where the frame under way ends, or beyond
    /// the piece when it ends later; and the walk is left as it was.
    func testUntilBoundaryFindsWhereTheFrameUnderWayEnds() {
        let (bytes, ends) = stream()
        bytes.withUnsafeBytes { raw in
            for cut in [0, 1, 3, 5, 7, 8, 10, 12, 15, 70_000, ends[1] - 1, ends[1], ends[2] + 1, ends[3] - 1] {
                var frames = WebSocketFrames()
                frames.advance(UnsafeRawBufferPointer(rebasing: raw[0..<cut]))
                let before = (frames.atBoundary, frames.payloadLeft)
                let next = frames.atBoundary ? cut : ends.first { $0 > cut }!
                for piece in [1, 2, 9, 4096, raw.count - cut] {
                    let found = frames.untilBoundary(UnsafeRawBufferPointer(rebasing: raw[cut..<(cut + piece)]))
                    XCTAssertEqual(found, next - cut <= piece ? next - cut : nil, "cut \(cut), piece \(piece)")
                }
                XCTAssertTrue(before == (frames.atBoundary, frames.payloadLeft))
            }
        }
    }

    func testPayloadLeftIsKnownOnlyOnceTheHeaderIsWhole() {
        var frames = WebSocketFrames()
        let frame = WebSocketFrames.serverFrame(first: 0x82, payload: [UInt8](repeating: 1, count: 300))
        frame.withUnsafeBytes { raw in
            frames.advance(UnsafeRawBufferPointer(rebasing: raw[0..<3]))
            XCTAssertEqual(frames.payloadLeft, 0)
            XCTAssertFalse(frames.atBoundary)
            frames.advance(UnsafeRawBufferPointer(rebasing: raw[3..<10]))
            XCTAssertEqual(frames.payloadLeft, 294)
            frames.advance(seen: UnsafeRawBufferPointer(rebasing: raw[10..<10]), count: 294)
            XCTAssertTrue(frames.atBoundary)
        }
    }
}
