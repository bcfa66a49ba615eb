/// The generated key format: `{prefix}_{id}_{secret}{check}`.
///
/// `id` is 8 base62 characters and public; `secret` 32 random base62 characters; `check` 6 base62
/// characters of CRC-32 over everything before it, so a mistyped or made-up key is refused
/// without a lookup and secret scanners can recognise a leaked one.
public enum KeyFormat {
    public static let idLength = 8
    public static let secretLength = 32
    public static let checkLength = 6
    public static let legacyLengths = 16...256

    public struct Generated: Sendable {
        public let key: String
        public let id: String
    }

    public static func generate(prefix: String, id: String? = nil) -> Generated {
        let keyID = id ?? String(decoding: Base62.random(idLength), as: UTF8.self)
        var body = Array(prefix.utf8)
        body.append(UInt8(ascii: "_"))
        body.append(contentsOf: keyID.utf8)
        body.append(UInt8(ascii: "_"))
        body.append(contentsOf: Base62.random(secretLength))
        body.append(contentsOf: Base62.encode(UInt64(CRC32.checksum(body)), width: checkLength))
        return Generated(key: String(decoding: body, as: UTF8.self), id: keyID)
    }

    public static func newID() -> String { String(decoding: Base62.random(idLength), as: UTF8.self) }

    public enum Shape: Equatable {
        /// A well-formed generated key with a valid checksum.
        case generated
        /// Not in the generated form, but acceptable as an imported legacy key.
        case legacy
        /// Looks like a generated key but its checksum or characters are wrong, or is no key at all.
        case malformed
    }

    /// Classifies presented key bytes without touching the key store.
    public static func classify(_ key: UnsafeRawBufferPointer, prefix: [UInt8]) -> Shape {
        let n = key.count
        let generatedLength = prefix.count + 1 + idLength + 1 + secretLength + checkLength
        if n == generatedLength && startsWith(key, prefix) && key[prefix.count] == UInt8(ascii: "_")
            && key[prefix.count + 1 + idLength] == UInt8(ascii: "_")
        {
            for i in (prefix.count + 1)..<n where i != prefix.count + 1 + idLength {
                if !Base62.isDigit(key[i]) { return .malformed }
            }
            let bodyLength = n - checkLength
            // Compare the check digits from the last one back, without building them.
            var crc = UInt64(CRC32.checksum(UnsafeRawBufferPointer(rebasing: key[0..<bodyLength])))
            var i = n - 1
            while i >= bodyLength {
                if key[i] != Base62.alphabet[Int(crc % 62)] { return .malformed }
                crc /= 62
                i -= 1
            }
            return .generated
        }
        guard legacyLengths.contains(n) else { return .malformed }
        for b in key where b < 0x21 || b > 0x7E { return .malformed }
        // A key that carries our prefix and shape markers but not our length is a typo, not legacy.
        if startsWith(key, prefix), n > prefix.count, key[prefix.count] == UInt8(ascii: "_"), n < generatedLength + 4, n > generatedLength - 4 {
            return .malformed
        }
        return .legacy
    }

    /// The id embedded in a generated key (bytes after the prefix).
    public static func embeddedID(_ key: UnsafeRawBufferPointer, prefix: [UInt8]) -> String {
        let s = prefix.count + 1
        return String(decoding: UnsafeRawBufferPointer(rebasing: key[s..<(s + idLength)]), as: UTF8.self)
    }

    static func startsWith(_ key: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
        guard key.count >= prefix.count else { return false }
        for i in 0..<prefix.count where key[i] != prefix[i] { return false }
        return true
    }
}
