/// Reads a message body in its sender's framing and hands it on in the framing chosen for the
/// receiver: as it is, or as keygate's own chunks (RFC 9112 §7.1). The sender's framing bytes
/// are never copied (HTTP.md rule 6). Pure: bytes in, parts out, so both directions of the
/// proxy share it and it can be tested without sockets.
public struct BodyReframer: Sendable {
    let chunkOutput: Bool
    var remaining: UInt64 = 0
    var decoder: ChunkedDecoder?
    let untilClose: Bool
    public private(set) var isDone: Bool
    /// Payload bytes handed on so far.
    public private(set) var payloadBytes: UInt64 = 0
    /// Bytes read from the sender so far, framing included.
    public private(set) var wireBytes: UInt64 = 0

    /// `chunkOutput`: wrap the payload in chunks (and end with the last chunk) instead of
    /// passing it on as it is.
    public init(_ framing: BodyFraming, chunkOutput: Bool) {
        self.chunkOutput = chunkOutput
        switch framing {
        case .none:
            untilClose = false
            isDone = true
        case .contentLength(let n):
            untilClose = false
            remaining = n
            isDone = n == 0
        case .chunked:
            untilClose = false
            decoder = ChunkedDecoder()
            isDone = false
        case .untilClose:
            untilClose = true
            isDone = false
        }
    }

    /// Whether the sender's framing tells where the body ends (so leftover bytes after it are
    /// the next message rather than part of this one).
    public var isDelimited: Bool { !untilClose }

    /// Takes body bytes from `buf` and passes what to send to `emit`. Returns how many bytes
    /// of `buf` belonged to the body; the rest is whatever follows it.
    public mutating func feed(_ buf: UnsafeRawBufferPointer, emit: (WriteParts) -> Void) throws(HTTPParseError) -> Int {
        if isDone { return 0 }
        if untilClose {
            pass(buf, emit)
            wireBytes += UInt64(buf.count)
            return buf.count
        }
        if var d = decoder {
            defer { decoder = d }
            let chunk = chunkOutput
            var payload: UInt64 = 0
            let used = try d.decode(buf) { data in
                payload += UInt64(data.count)
                Self.pass(data, chunk, emit)
            }
            payloadBytes += payload
            wireBytes += UInt64(used)
            if d.isDone { finish(emit) }
            return used
        }
        let take = Int(min(UInt64(buf.count), remaining))
        if take > 0 { pass(UnsafeRawBufferPointer(rebasing: buf[0..<take]), emit) }
        remaining -= UInt64(take)
        wireBytes += UInt64(take)
        if remaining == 0 { finish(emit) }
        return take
    }

    /// The sender closed its side. Completes a body delimited by the close and returns true;
    /// false when the body was cut short (and must never pass for a complete one).
    public mutating func finishAtClose(emit: (WriteParts) -> Void) -> Bool {
        if isDone { return true }
        guard untilClose else { return false }
        finish(emit)
        return true
    }

    private mutating func finish(_ emit: (WriteParts) -> Void) {
        isDone = true
        if chunkOutput { ChunkedEncoder.lastChunk.withUnsafeBytes { emit(WriteParts($0)) } }
    }

    private mutating func pass(_ data: UnsafeRawBufferPointer, _ emit: (WriteParts) -> Void) {
        payloadBytes += UInt64(data.count)
        Self.pass(data, chunkOutput, emit)
    }

    private static func pass(_ data: UnsafeRawBufferPointer, _ chunk: Bool, _ emit: (WriteParts) -> Void) {
        guard !data.isEmpty else { return }
        guard chunk else {
            emit(WriteParts(data))
            return
        }
        var header: [UInt8] = []
        ChunkedEncoder.appendChunkHeader(data.count, to: &header)
        header.withUnsafeBytes { h in
            ChunkedEncoder.crlf.withUnsafeBytes { c in emit(WriteParts(h, data, c)) }
        }
    }
}
