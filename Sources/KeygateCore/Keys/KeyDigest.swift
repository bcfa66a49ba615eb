import COpenSSL

/// SHA-256 of a key string: the only form in which keys are stored or compared.
public struct KeyDigest: Hashable, Sendable {
    let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// Hashes raw key bytes with libcrypto's one-shot SHA-256.
    public init(hashing key: UnsafeRawBufferPointer) {
        var out: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &out) { o in
            _ = SHA256(key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count, o.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        (w0, w1, w2, w3) = out
    }

    public init(hashing key: String) {
        var s = key
        self = s.withUTF8 { KeyDigest(hashing: UnsafeRawBufferPointer($0)) }
    }

    /// Parses the stored form `sha256:<64 hex digits>`.
    public init?(stored: String) {
        let utf8 = Array(stored.utf8)
        guard utf8.count == 71, stored.hasPrefix("sha256:") else { return nil }
        var raw = [UInt8](repeating: 0, count: 32)
        for i in 0..<32 {
            guard let hi = Self.hex(utf8[7 + 2 * i]), let lo = Self.hex(utf8[8 + 2 * i]) else { return nil }
            raw[i] = hi << 4 | lo
        }
        var out: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &out) { $0.copyBytes(from: raw) }
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
