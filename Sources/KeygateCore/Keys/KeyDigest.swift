import COpenSSL

/// SHA-256 of a key string: the only form in which keys are stored or compared.
public struct KeyDigest: Hashable, Sendable {
    let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// Hashes raw key bytes with libcrypto's SHA-256.
    public init(hashing key: UnsafeRawBufferPointer) {
        var out: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &out) { o in
            kg_sha256(key.baseAddress, key.count, o.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        (w0, w1, w2, w3) = out
    }

    /// A digest computed elsewhere (a certificate's SHA-256 fingerprint), 32 bytes.
    public init?(digest bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        var out: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &out) { raw in
            for i in 0..<32 { raw[i] = bytes[i] }
        }
        (w0, w1, w2, w3) = out
    }

    public init(hashing key: String) {
        var s = key
        self = s.withUTF8 { KeyDigest(hashing: UnsafeRawBufferPointer($0)) }
    }

    /// Parses the stored form `sha256:<64 hex digits>`.
    public init?(stored: String) {
        var s = stored
        guard let d = s.withUTF8({ KeyDigest(storedBytes: $0) }) else { return nil }
        self = d
    }

    public init?(storedBytes utf8: UnsafeBufferPointer<UInt8>) {
        guard utf8.count == 71, utf8[0] == UInt8(ascii: "s"), utf8[1] == UInt8(ascii: "h"), utf8[2] == UInt8(ascii: "a"),
            utf8[3] == UInt8(ascii: "2"), utf8[4] == UInt8(ascii: "5"), utf8[5] == UInt8(ascii: "6"), utf8[6] == UInt8(ascii: ":")
        else { return nil }
        var out: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        let ok = withUnsafeMutableBytes(of: &out) { raw -> Bool in
            for i in 0..<32 {
                guard let hi = Self.hex(utf8[7 + 2 * i]), let lo = Self.hex(utf8[8 + 2 * i]) else { return false }
                raw[i] = hi << 4 | lo
            }
            return true
        }
        guard ok else { return nil }
        (w0, w1, w2, w3) = out
    }

    public var stored: String {
        var t = (w0, w1, w2, w3)
        let hex = Array("0123456789abcdef".utf8)
        var s: [UInt8] = Array("sha256:".utf8)
        withUnsafeBytes(of: &t) { raw in
            for b in raw {
                s.append(hex[Int(b >> 4)])
                s.append(hex[Int(b & 0xF)])
            }
        }
        return String(decoding: s, as: UTF8.self)
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}
