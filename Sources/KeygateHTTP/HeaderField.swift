#if canImport(Glibc)
import Glibc
#endif

/// One field line of a head, as byte ranges into the head's storage (value without OWS).
public struct HeaderField: Sendable, Equatable {
    public var name: Range<Int>
    public var value: Range<Int>
}

enum FieldLine {
    /// Parses `name: value` inside `line` (CRLF excluded) per RFC 9112 §5.
    static func parse(_ p: UnsafeBufferPointer<UInt8>, _ line: Range<Int>) throws(HTTPParseError) -> HeaderField {
        let first = p[line.lowerBound]
        if first == 0x20 || first == 0x09 { throw .bad("obsolete line folding") }
        var i = line.lowerBound
        while i < line.upperBound {
            let b = p[i]
            if b == UInt8(ascii: ":") { break }
            if !ByteClass.isTchar(b) {
                if b == 0x20 || b == 0x09 { throw .bad("whitespace in or after a field name") }
                throw .bad("invalid character in a field name")
            }
            i += 1
        }
        if i == line.upperBound { throw .bad("field line without a colon") }
        if i == line.lowerBound { throw .bad("empty field name") }
        let name = line.lowerBound..<i
        var vs = i + 1
        var ve = line.upperBound
        while vs < ve, p[vs] == 0x20 || p[vs] == 0x09 { vs += 1 }
        while ve > vs, p[ve - 1] == 0x20 || p[ve - 1] == 0x09 { ve -= 1 }
        if !ByteClass.allFieldValue(p, vs..<ve) { throw .bad("control character in a field value") }
        return HeaderField(name: name, value: vs..<ve)
    }

    /// Splits a head into lines (CRLF-terminated) after the start line, calling `body` per line.
    static func forEachLine(
        _ p: UnsafeBufferPointer<UInt8>, from: Int, to: Int,
        _ body: (Range<Int>) throws(HTTPParseError) -> Void
    ) throws(HTTPParseError) {
        // memchr per line, not a loop per byte: the head scanner has already seen every byte.
        guard from < to, let base = p.baseAddress else { return }
        var s = from
        while s < to, let lf = memchr(base + s, 0x0A, to - s) {
            let i = UnsafeRawPointer(lf) - UnsafeRawPointer(base)
            let end = i - 1  // scanner guaranteed CR before LF
            if end > s { try body(s..<end) }
            s = i + 1
        }
    }
}

/// Parses a decimal Content-Length: digits only, at most 15 of them.
func parseContentLength(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) throws(HTTPParseError) -> UInt64 {
    if r.isEmpty || r.count > 15 { throw .bad("invalid Content-Length") }
    var v: UInt64 = 0
    for i in r {
        let b = p[i]
        guard b >= 0x30 && b <= 0x39 else { throw .bad("invalid Content-Length") }
        v = v * 10 + UInt64(b - 0x30)
    }
    return v
}

/// Calls `body` with each non-empty run of `r` between `separator`s, as it stands (not trimmed).
/// Inlinable, as the two below: other modules call them per request, specialised.
@inlinable
public func forEachPart<E: Error>(
    _ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, separator: UInt8, _ body: (Range<Int>) throws(E) -> Void
) throws(E) {
    var s = r.lowerBound
    for i in r.lowerBound...r.upperBound where i == r.upperBound || p[i] == separator {
        if i > s { try body(s..<i) }
        s = i + 1
    }
}

/// Splits a comma-separated list value into trimmed, non-empty element ranges.
@inlinable
public func forEachListElement<E: Error>(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, _ body: (Range<Int>) throws(E) -> Void) throws(E) {
    try forEachPart(p, r, separator: UInt8(ascii: ",")) { (part) throws(E) in
        let t = p.trimmingOWS(part)
        if !t.isEmpty { try body(t) }
    }
}

extension UnsafeBufferPointer where Element == UInt8 {
    /// `r` without the spaces and tabs at either end.
    @inlinable
    public func trimmingOWS(_ r: Range<Int>) -> Range<Int> {
        var a = r.lowerBound
        var b = r.upperBound
        while a < b, self[a] == 0x20 || self[a] == 0x09 { a += 1 }
        while b > a, self[b - 1] == 0x20 || self[b - 1] == 0x09 { b -= 1 }
        return a..<b
    }
}
