/// Incremental decoder for the chunked transfer coding (RFC 9112 §7.1), strict about framing:
/// 1–16 hex digits, well-formed extensions of at most 1 KiB per size line, CRLF everywhere.
/// Trailer fields are validated like header fields and then dropped.
public struct ChunkedDecoder: Sendable {
    enum State: Sendable {
        case size
        case ext
        case sizeLF
        case data
        case dataCR
        case dataLF
        case trailer
        case trailerLF
        case done
    }

    public static let maxExtensionBytes = 1024
    public let maxTrailerBytes: Int
    var state: State = .size
    var digits = 0
    var remaining: UInt64 = 0
    var ext: [UInt8] = []
    var line: [UInt8] = []
    var trailerBytes = 0
    public private(set) var totalBytes: UInt64 = 0

    public init(maxTrailerBytes: Int = 8192) {
        self.maxTrailerBytes = maxTrailerBytes
    }

    public var isDone: Bool { if case .done = state { return true } else { return false } }

    /// Consumes `buf`, calling `onData` with each run of body bytes. Returns how many bytes were
    /// consumed; fewer than `buf.count` only when the message ended inside `buf`.
    public mutating func decode(_ buf: UnsafeRawBufferPointer, onData: (UnsafeRawBufferPointer) -> Void) throws(HTTPParseError) -> Int {
        var i = 0
        let n = buf.count
        while i < n {
            let b = buf[i]
            switch state {
            case .size:
                let h = ByteClass.hexValue(b)
                if h != 0xFF {
                    if digits == 16 { throw .bad("chunk size too long") }
                    remaining = remaining << 4 | UInt64(h)
                    digits += 1
                    i += 1
                    continue
                }
                if digits == 0 { throw .bad("invalid chunk size") }
                if b == 0x0D {
                    state = .sizeLF
                } else if b == UInt8(ascii: ";") || b == 0x20 || b == 0x09 {
                    ext.removeAll(keepingCapacity: true)
                    ext.append(b)
                    state = .ext
                } else {
                    throw .bad("invalid chunk size")
                }
                i += 1
            case .ext:
                if b == 0x0D {
                    try Self.validateExtensions(ext)
                    state = .sizeLF
                } else {
                    if b == 0x0A { throw .bareLF }
                    ext.append(b)
                    if ext.count + digits > Self.maxExtensionBytes { throw .bad("chunk extension too long") }
                }
                i += 1
            case .sizeLF:
                guard b == 0x0A else { throw .bareCR }
                i += 1
                digits = 0
                if remaining == 0 {
                    line.removeAll(keepingCapacity: true)
                    state = .trailer
                } else {
                    let (sum, overflow) = totalBytes.addingReportingOverflow(remaining)
                    if overflow || sum > UInt64(Int64.max) { throw .bad("chunked body too large") }
                    totalBytes = sum
                    state = .data
                }
            case .data:
                let take = Int(min(UInt64(n - i), remaining))
                onData(UnsafeRawBufferPointer(rebasing: buf[i..<(i + take)]))
                i += take
                remaining -= UInt64(take)
                if remaining == 0 { state = .dataCR }
            case .dataCR:
                guard b == 0x0D else { throw .bad("missing CRLF after chunk data") }
                state = .dataLF
                i += 1
            case .dataLF:
                guard b == 0x0A else { throw .bareCR }
                state = .size
                i += 1
            case .trailer:
                if b == 0x0D {
                    state = .trailerLF
                } else {
                    if b == 0x0A { throw .bareLF }
                    line.append(b)
                    trailerBytes += 1
                    if trailerBytes > maxTrailerBytes { throw .headerTooLarge }
                }
                i += 1
            case .trailerLF:
                guard b == 0x0A else { throw .bareCR }
                i += 1
                if line.isEmpty {
                    state = .done
                    return i
                }
                let fieldLine = line
                try fieldLine.withUnsafeBufferPointer { (p) throws(HTTPParseError) in
                    _ = try FieldLine.parse(p, 0..<p.count)
                }
                line.removeAll(keepingCapacity: true)
                state = .trailer
            case .done:
                return i
            }
        }
        return i
    }

    /// chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
    static func validateExtensions(_ e: [UInt8]) throws(HTTPParseError) {
        var i = 0
        let n = e.count
        func skipBWS() { while i < n, e[i] == 0x20 || e[i] == 0x09 { i += 1 } }
        func token() -> Bool {
            let s = i
            while i < n, ByteClass.isTchar(e[i]) { i += 1 }
            return i > s
        }
        while true {
            skipBWS()
            if i == n { return }
            guard e[i] == UInt8(ascii: ";") else { throw .bad("malformed chunk extension") }
            i += 1
            skipBWS()
            guard token() else { throw .bad("malformed chunk extension") }
            skipBWS()
            if i < n, e[i] == UInt8(ascii: "=") {
                i += 1
                skipBWS()
                if i < n, e[i] == UInt8(ascii: "\"") {
                    i += 1
                    var closed = false
                    while i < n {
                        let c = e[i]
                        if c == UInt8(ascii: "\\") {
                            i += 2
                            continue
                        }
                        if c == UInt8(ascii: "\"") { closed = true; i += 1; break }
                        if !ByteClass.isFieldValue(c) { throw .bad("malformed chunk extension") }
                        i += 1
                    }
                    if !closed || i > n { throw .bad("malformed chunk extension") }
                } else if !token() {
                    throw .bad("malformed chunk extension")
                }
            }
        }
    }
}

/// Writes the chunked framing keygate itself puts around forwarded data.
public enum ChunkedEncoder {
    /// Appends "<hex size>\r\n" for a chunk of `size` bytes (size > 0).
    public static func appendChunkHeader(_ size: Int, to out: inout [UInt8]) {
        precondition(size > 0)
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var shift = (Int.bitWidth - size.leadingZeroBitCount - 1) / 4 * 4
        while shift >= 0 {
            out.append(digits[(size >> shift) & 0xF])
            shift -= 4
        }
        out.append(0x0D)
        out.append(0x0A)
    }

    public static let crlf: [UInt8] = [0x0D, 0x0A]
    public static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)
}
