import KeygateCore
import XCTest

final class KeyFormatTests: XCTestCase {
    func classify(_ key: String, prefix: String = "kg") -> KeyFormat.Shape {
        var k = key
        return k.withUTF8 { KeyFormat.classify(UnsafeRawBufferPointer($0), prefix: Array(prefix.utf8)) }
    }

    func testGeneratedKeyShape() {
        let g = KeyFormat.generate(prefix: "kg")
        let parts = g.key.split(separator: "_")
        XCTAssertEqual(parts.count, 3)
        XCTAssertEqual(parts[0], "kg")
        XCTAssertEqual(String(parts[1]), g.id)
        XCTAssertEqual(parts[1].count, 8)
        XCTAssertEqual(parts[2].count, 32 + 6)
        XCTAssertTrue(g.key.utf8.allSatisfy { $0 == UInt8(ascii: "_") || ($0 < 128 && Character(UnicodeScalar($0)).isLetter) || ($0 >= 0x30 && $0 <= 0x39) })
        XCTAssertEqual(classify(g.key), .generated)
    }

    func testKeysAreUnique() {
        var seen = Set<String>()
        for _ in 0..<1000 { XCTAssertTrue(seen.insert(KeyFormat.generate(prefix: "kg").key).inserted) }
    }

    func testChecksumCatchesEveryOneCharacterTypo() {
        let key = Array(KeyFormat.generate(prefix: "kg").key.utf8)
        for i in 12..<key.count {
            var typo = key
            typo[i] = typo[i] == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a")
            XCTAssertEqual(classify(String(decoding: typo, as: UTF8.self)), .malformed, "typo at \(i)")
        }
    }

    func testTruncatedAndOddKeys() {
        let key = KeyFormat.generate(prefix: "kg").key
        XCTAssertEqual(classify(String(key.dropLast())), .malformed)
        XCTAssertEqual(classify("short"), .malformed)
        XCTAssertEqual(classify(String(repeating: "x", count: 300)), .malformed)
        XCTAssertEqual(classify("has space in the middle of it"), .malformed)
        XCTAssertEqual(classify("legacy-secret-0123456789"), .legacy)
    }

    func testCRC32MatchesZlib() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([]), 0)
        XCTAssertEqual(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
        XCTAssertEqual(Base62.encode(61, width: 3), Array("00z".utf8))
    }

    /// Eight bytes a step gives what one byte a step gives, at every length and alignment.
    func testCRC32SlicedMatchesBytewise() {
        func bytewise(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in bytes {
                c ^= UInt32(b)
                for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            }
            return c ^ 0xFFFF_FFFF
        }
        var rng = SystemRandomNumberGenerator()
        let data = (0..<200).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for start in 0..<9 {
            for length in 0...(data.count - start) {
                let slice = data[start..<(start + length)]
                let sliced = slice.withUnsafeBytes { CRC32.checksum($0) }
                XCTAssertEqual(sliced, bytewise(slice), "start \(start), length \(length)")
            }
        }
    }

    func testDigestRoundTripAndKnownValue() {
        let d = KeyDigest(hashing: "abc")
        XCTAssertEqual(d.stored, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(KeyDigest(stored: d.stored), d)
        XCTAssertNil(KeyDigest(stored: "sha256:xyz"))
        XCTAssertNil(KeyDigest(stored: "md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
    }
}

