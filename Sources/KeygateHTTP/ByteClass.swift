/// Byte classes from RFC 9110 and RFC 3986, as 256-entry tables so each check is one load.
@usableFromInline
enum ByteClass {
    @usableFromInline static let tchar: [Bool] = table { b in
        isAlpha(b) || isDigit(b) || "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
    /// Characters allowed in a request target: unreserved, gen-delims but `#`, sub-delims, `%`.
    @usableFromInline static let targetChar: [Bool] = table { b in
        isAlpha(b) || isDigit(b) || "-._~:/?[]@!$&'()*+,;=%".utf8.contains(b)
    }
    /// Field-value bytes: VCHAR, obs-text, SP and HT. NUL, other controls and DEL are refused.
    @usableFromInline static let fieldValue: [Bool] = table { b in
        b == 0x09 || b == 0x20 || (b > 0x20 && b != 0x7F)
    }
    @usableFromInline static let hexValue: [UInt8] = (0..<256).map { i -> UInt8 in
        let b = UInt8(i)
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return 0xFF
        }
    }

    static func table(_ f: (UInt8) -> Bool) -> [Bool] { (0..<256).map { f(UInt8($0)) } }
    static func isAlpha(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
}

@inline(__always) func lower(_ b: UInt8) -> UInt8 { (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b }

extension UnsafeBufferPointer where Element == UInt8 {
    /// Case-insensitive ASCII comparison of `range` with a lowercase literal.
    @inlinable
    public func equalsLowercased(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        let lit = literal.utf8Start
        var i = 0
        for p in range {
            let b = self[p]
            let l = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
            if l != lit[i] { return false }
            i += 1
        }
        return true
    }
}

extension Array where Element == UInt8 {
    @inlinable
    public func equalsLowercased(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        withUnsafeBufferPointer { $0.equalsLowercased(range, literal) }
    }

    /// Case-insensitive ASCII comparison of `range` with lowercase `other` bytes.
    @inlinable
    public func equalsLowercased(_ range: Range<Int>, bytes other: [UInt8]) -> Bool {
        guard range.count == other.count else { return false }
        var i = 0
        for p in range {
            let b = self[p]
            let l = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
            if l != other[i] { return false }
            i += 1
        }
        return true
    }

    /// True when the bytes in `range` start with lowercase `prefix`, case-insensitively,
    /// reading `_` as `-` (some frameworks fold both to one name).
    @inlinable
    public func hasFieldPrefix(_ range: Range<Int>, _ prefix: [UInt8]) -> Bool {
        guard range.count >= prefix.count else { return false }
        var i = 0
        var p = range.lowerBound
        while i < prefix.count {
            var b = self[p]
            b = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
            if b == UInt8(ascii: "_") { b = UInt8(ascii: "-") }
            if b != prefix[i] { return false }
            i += 1
            p += 1
        }
        return true
    }

    public func string(_ range: Range<Int>) -> String {
        String(decoding: self[range], as: UTF8.self)
    }
}
