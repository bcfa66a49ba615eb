/// Byte classes from RFC 9110 and RFC 3986, as bit masks and compares: no lazily initialised
/// tables on the hot path.
public enum ByteClass {
    /// token characters (RFC 9110 §5.6.2): ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA.
    @inline(__always) static func isTchar(_ b: UInt8) -> Bool { inSet(b, 0x03FF_6CFA_0000_0000, 0x57FF_FFFF_C7FF_FFFE) }

    /// Characters allowed in a request target: unreserved, gen-delims but `#`, sub-delims, `%`.
    @inline(__always) static func isTargetChar(_ b: UInt8) -> Bool { inSet(b, 0xAFFF_FFF2_0000_0000, 0x47FF_FFFE_AFFF_FFFF) }

    /// A byte set below 0x80 as two 64-bit masks: a shift and a test per byte, where a switch
    /// over the ranges was a chain of compares.
    @inline(__always) private static func inSet(_ b: UInt8, _ low: UInt64, _ high: UInt64) -> Bool {
        if b < 64 { return (low >> UInt64(b)) & 1 != 0 }
        if b < 128 { return (high >> UInt64(b - 64)) & 1 != 0 }
        return false
    }

    /// Field-value bytes: VCHAR, obs-text, SP and HT. NUL, other controls and DEL are refused.
    @inline(__always) static func isFieldValue(_ b: UInt8) -> Bool { b == 0x09 || (b >= 0x20 && b != 0x7F) }

    /// Whether every byte of `r` is a field-value byte. Eight bytes a step: a word with no byte
    /// below 0x20 and none equal to 0x7F passes at once (bytes from 0x80 up are obs-text and never
    /// flagged); a flagged word (a tab, or a real control) is checked byte by byte.
    static func allFieldValue(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> Bool {
        guard let base = p.baseAddress, !r.isEmpty else { return true }
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        var i = r.lowerBound
        while i + 8 <= r.upperBound {
            let x = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
            let below20 = (x &- ones &* 0x20) & ~x & highs
            let d = x ^ (ones &* 0x7F)
            let del = (d &- ones) & ~d & highs
            if below20 | del != 0 {
                for j in i..<(i + 8) where !isFieldValue(base[j]) { return false }
            }
            i += 8
        }
        while i < r.upperBound {
            if !isFieldValue(base[i]) { return false }
            i += 1
        }
        return true
    }

    /// The value of a hex digit, or 0xFF.
    @inline(__always) static func hexValue(_ b: UInt8) -> UInt8 {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x61...0x66: return b - 0x61 + 10
        case 0x41...0x46: return b - 0x41 + 10
        default: return 0xFF
        }
    }

    /// An ASCII letter, either case.
    public static func isAlpha(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
}

@inline(__always) func lower(_ b: UInt8) -> UInt8 { (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b }

extension UnsafeBufferPointer where Element == UInt8 {
    /// Case-insensitive ASCII comparison of `range` with a lowercase literal.
    @inlinable
    public func equalsLowercased(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        matches(range, literal.utf8Start, literal.utf8CodeUnitCount, underscoreAsDash: false, prefixOnly: false)
    }

    /// `equalsLowercased` for a field name, reading `_` as `-`: apps that see fields as
    /// `HTTP_X_FORWARDED_FOR` fold `x_forwarded_for` and `x-forwarded-for` to one name.
    @inlinable
    public func equalsFieldName(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        matches(range, literal.utf8Start, literal.utf8CodeUnitCount, underscoreAsDash: true, prefixOnly: false)
    }

    /// `equalsFieldName` with a lowercase name in bytes (one read from the policy).
    @inlinable
    public func equalsFieldName(_ range: Range<Int>, bytes other: [UInt8]) -> Bool {
        other.withUnsafeBufferPointer { matches(range, $0.baseAddress, $0.count, underscoreAsDash: true, prefixOnly: false) }
    }

    /// The one comparison behind the others: `range` (or its first `count` bytes, with
    /// `prefixOnly`) against lowercase `other`, folding ASCII case and, if asked, `_` into `-`.
    @inlinable @inline(__always)
    func matches(_ range: Range<Int>, _ other: UnsafePointer<UInt8>?, _ count: Int, underscoreAsDash: Bool, prefixOnly: Bool) -> Bool {
        guard prefixOnly ? range.count >= count : range.count == count else { return false }
        guard count > 0, let other else { return true }
        var i = 0
        var p = range.lowerBound
        while i < count {
            let b = self[p]
            let l = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : (underscoreAsDash && b == 0x5F ? 0x2D : b)
            if l != other[i] { return false }
            i += 1
            p += 1
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
        withUnsafeBufferPointer { p in
            other.withUnsafeBufferPointer { p.matches(range, $0.baseAddress, $0.count, underscoreAsDash: false, prefixOnly: false) }
        }
    }

    /// True when the bytes in `range` start with lowercase `prefix`, case-insensitively,
    /// reading `_` as `-` (some frameworks fold both to one name).
    @inlinable
    public func hasFieldPrefix(_ range: Range<Int>, _ prefix: [UInt8]) -> Bool {
        withUnsafeBufferPointer { p in
            prefix.withUnsafeBufferPointer { p.matches(range, $0.baseAddress, $0.count, underscoreAsDash: true, prefixOnly: true) }
        }
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
