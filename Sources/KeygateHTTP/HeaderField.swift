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
        var j = vs
        while j < ve {
            if !ByteClass.isFieldValue(p[j]) { throw .bad("control character in a field value") }
            j += 1
        }
        return HeaderField(name: name, value: vs..<ve)
    }

    /// Splits a head into lines (CRLF-terminated) after the start line, calling `body` per line.
    static func forEachLine(
        _ p: UnsafeBufferPointer<UInt8>, from: Int, to: Int,
        _ body: (Range<Int>) throws(HTTPParseError) -> Void
    ) throws(HTTPParseError) {
        var s = from
        var i = from
        while i < to {
            if p[i] == 0x0A {
                let end = i - 1  // scanner guaranteed CR before LF
                if end > s { try body(s..<end) }
                s = i + 1
            }
            i += 1
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

/// Splits a comma-separated list value into trimmed, non-empty element ranges.
func forEachListElement(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, _ body: (Range<Int>) throws(HTTPParseError) -> Void) throws(HTTPParseError) {
    var s = r.lowerBound
    var i = r.lowerBound
    while i <= r.upperBound {
        if i == r.upperBound || p[i] == UInt8(ascii: ",") {
            var a = s
            var b = i
            while a < b, p[a] == 0x20 || p[a] == 0x09 { a += 1 }
            while b > a, p[b - 1] == 0x20 || p[b - 1] == 0x09 { b -= 1 }
            if a < b { try body(a..<b) }
            s = i + 1
        }
        i += 1
    }
}
