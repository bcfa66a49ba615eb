/// Byte classes from RFC 9110 and RFC 3986, as 256-entry tables so each check is one load.
/// Byte classes from RFC 9110 and RFC 3986, as switch-based functions: no lazily initialised
/// tables on the hot path.
@usableFromInline
enum ByteClass {
    @inline(__always) static func isTchar(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
        default: return false
        }
    }

    /// Characters allowed in a request target: unreserved, gen-delims but `#`, sub-delims, `%`.
    @inline(__always) static func isTargetChar(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        // - . _ ~ : / ? [ ] @ ! $ & ' ( ) * + , ; = %
        case 0x2D, 0x2E, 0x5F, 0x7E, 0x3A, 0x2F, 0x3F, 0x5B, 0x5D, 0x40, 0x21, 0x24, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x3B, 0x3D, 0x25:
            return true
        default: return false
        }
    }

    /// Field-value bytes: VCHAR, obs-text, SP and HT. NUL, other controls and DEL are refused.
    @inline(__always) static func isFieldValue(_ b: UInt8) -> Bool { b == 0x09 || (b >= 0x20 && b != 0x7F) }

    /// The value of a hex digit, or 0xFF.
    @inline(__always) static func hexValue(_ b: UInt8) -> UInt8 {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x61...0x66: return b - 0x61 + 10
        case 0x41...0x46: return b - 0x41 + 10
        default: return 0xFF
        }
    }

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

extension Array where Element == UInt8 {
    /// Appends a literal's bytes straight from the binary: no String, no lazy global.
    @inlinable
    public mutating func append(_ literal: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }
}

extension Array where Element == UInt8 {
    /// Appends `source[range]` through a buffer pointer: one copy, not the generic slice path.
    @inlinable
    public mutating func append(_ source: [UInt8], _ range: Range<Int>) {
        source.withUnsafeBufferPointer { append(contentsOf: UnsafeBufferPointer(rebasing: $0[range])) }
    }
}

extension Array where Element == UInt8 {
    /// Appends `name: value` CRLF for a parsed field of `p`. A line already written that way
    /// (the usual case) is copied in one piece; any other spacing is normalised.
    @inlinable
    public mutating func appendFieldLine(_ p: UnsafeBufferPointer<UInt8>, _ f: HeaderField) {
        let n = f.name
        let v = f.value
        if v.lowerBound == n.upperBound + 2 && p[n.upperBound] == UInt8(ascii: ":") && p[n.upperBound + 1] == 0x20 && v.upperBound + 2 <= p.count
            && p[v.upperBound] == 0x0D && p[v.upperBound + 1] == 0x0A
        {
            append(contentsOf: UnsafeBufferPointer(rebasing: p[n.lowerBound..<(v.upperBound + 2)]))
            return
        }
        append(contentsOf: UnsafeBufferPointer(rebasing: p[n]))
        append(UInt8(ascii: ":"))
        append(0x20)
        append(contentsOf: UnsafeBufferPointer(rebasing: p[v]))
        append(0x0D)
        append(0x0A)
    }
}
