#if canImport(Glibc)
import Glibc
#endif

/// Finds where a message head ends, incrementally, while enforcing the line rules that do not
/// need the whole head: CRLF only, bounded line length, bounded total size.
///
/// Call `scan` again with the same (grown) buffer after each read; it resumes where it stopped.
public struct HeadScanner: Sendable {
    public var maxLineBytes: Int
    public var maxRequestLineBytes: Int
    public var maxHeadBytes: Int
    /// Where the head starts (after at most one leading empty line).
    public private(set) var start = 0
    private var position = 0
    private var lineStart = 0
    private var lines = 0

    public init(maxHeadBytes: Int = 32768, maxLineBytes: Int = 8192, maxRequestLineBytes: Int = 8192 + 64) {
        self.maxHeadBytes = maxHeadBytes
        self.maxLineBytes = maxLineBytes
        self.maxRequestLineBytes = maxRequestLineBytes
    }

    public mutating func reset() {
        start = 0; position = 0; lineStart = 0; lines = 0
    }

    /// Returns the index just past the head's final CRLF, or nil when more bytes are needed.
    public mutating func scan(_ buf: UnsafeRawBufferPointer) throws(HTTPParseError) -> Int? {
        let n = buf.count
        guard let base = buf.baseAddress else { return nil }
        while position < n {
            // Line by line with memchr rather than byte by byte: a CR anywhere but right before
            // the LF is a bare CR.
            guard let lf = memchr(base + position, 0x0A, n - position) else {
                if n - position > 1, memchr(base + position, 0x0D, n - position - 1) != nil { throw .bareCR }
                // A CR at the end of this read is looked at again with the next one: only an
                // LF right after it makes it part of a line end.
                position = buf[n - 1] == 0x0D ? n - 1 : n
                break
            }
            let at = base.distance(to: UnsafeRawPointer(lf))
            if at - position > 1, memchr(base + position, 0x0D, at - position - 1) != nil { throw .bareCR }
            position = at
            guard position > lineStart, buf[position - 1] == 0x0D else { throw .bareLF }
            let length = position - 1 - lineStart
            position += 1
            if length == 0 {
                if lines == 0 {
                    // One empty line before the request line is tolerated (RFC 9112 §2.2).
                    if lineStart != 0 { throw .bad("more than one empty line before the request line") }
                    start = position
                    lineStart = position
                    continue
                }
                return position
            }
            try checkLimits(lineLength: length)
            lines += 1
            lineStart = position
        }
        // No end yet: refuse early rather than buffer an endless line.
        try checkLimits(lineLength: position - lineStart)
        return nil
    }

    /// The same limits for a line seen whole and for one still arriving, so that a head is not
    /// refused or kept waiting depending on where its reads happened to end.
    @inline(__always)
    private func checkLimits(lineLength: Int) throws(HTTPParseError) {
        if lineLength > (lines == 0 ? maxRequestLineBytes : maxLineBytes) { throw lines == 0 ? .uriTooLong : .headerTooLarge }
        if position - start > maxHeadBytes { throw .headerTooLarge }
    }
}
