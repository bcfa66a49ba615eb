/// Base62 with the alphabet 0-9 A-Z a-z, used for key ids, secrets and checksums.
package enum Base62 {
    package static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    package static func isDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
    }

    /// `value` as exactly `width` digits, most significant first.
    package static func encode(_ value: UInt64, width: Int) -> [UInt8] {
        var out = [UInt8](repeating: alphabet[0], count: width)
        var v = value
        var i = width - 1
        while i >= 0 {
            out[i] = alphabet[Int(v % 62)]
            v /= 62
            i -= 1
        }
        return out
    }

    /// `count` characters drawn uniformly from the alphabet, from cryptographic random bytes.
    package static func random(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let bytes = SecureRandom.bytes(count * 2)
            // Rejection sampling: 248 = 4 × 62 keeps every character equally likely.
            for b in bytes where b < 248 && out.count < count {
                out.append(alphabet[Int(b % 62)])
            }
        }
        return out
    }
}
