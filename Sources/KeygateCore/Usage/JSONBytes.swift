import KeygateHTTP

/// Appending JSON values to a byte buffer without building intermediate strings.
public enum JSONBytes {
    @usableFromInline static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    @inlinable
    public static func appendString<C: Collection, S: ByteSink>(_ s: C, to out: inout S) where C.Element == UInt8 {
        out.append(UInt8(ascii: "\""))
        for b in s {
            switch b {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(b)
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(b)
            case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 0..<0x20, 0x7F:
                out.appendLiteral("\\u00")
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    @inlinable
    public static func appendString<S: ByteSink>(_ s: String, to out: inout S) {
        appendString(s.utf8, to: &out)
    }

    @inlinable
    public static func appendInt<I: BinaryInteger, S: ByteSink>(_ v: I, to out: inout S) {
        if v < 0 {
            out.append(UInt8(ascii: "-"))
            appendDecimal(UInt64(0 - Int64(v)), to: &out)
        } else {
            appendDecimal(UInt64(v), to: &out)
        }
    }

    /// Decimal digits without a generic path or a temporary array (one per usage field).
    @inlinable
    public static func appendDecimal<S: ByteSink>(_ value: UInt64, to out: inout S) {
        if value < 10 {
            out.append(UInt8(truncatingIfNeeded: value) + 0x30)
            return
        }
        var divisor: UInt64 = 10
        while divisor <= value / 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            out.append(UInt8(truncatingIfNeeded: rest / divisor) + 0x30)
            rest %= divisor
            divisor /= 10
        }
    }

    /// Milliseconds with two decimals from microseconds: 1234 µs → 1.23.
    @inlinable
    public static func appendMillis<S: ByteSink>(micros: Int64, to out: inout S) {
        let hundredths = (max(micros, 0) + 5) / 10
        appendInt(hundredths / 100, to: &out)
        out.append(UInt8(ascii: "."))
        let frac = Int(hundredths % 100)
        out.append(UInt8(0x30 + frac / 10))
        out.append(UInt8(0x30 + frac % 10))
    }
}
