/// Follows frame boundaries in one direction of a WebSocket stream (RFC 6455 §5.2) without
/// keeping any payload, so the gate knows where it may put a frame of its own (a close frame
/// when a key is revoked) without cutting one of the peer's in two.
public struct WebSocketFrames: Sendable {
    /// Header bytes of the frame being read (2 to 14 of them), until it is whole.
    private var header: [UInt8] = []
    private var remaining: UInt64 = 0

    public init() {}

    /// True between frames.
    public var atBoundary: Bool { header.isEmpty && remaining == 0 }

    /// Payload bytes of the current frame still to come once its header is whole; 0 between
    /// frames and inside a header.
    public var payloadLeft: UInt64 { header.isEmpty ? remaining : 0 }

    /// How many of the stream's next bytes may pass unseen without crossing into a later frame:
    /// the rest of the current payload, or, between frames, the whole next frame once `next`
    /// (those bytes, peeked) holds its header. Nil when that header is not whole.
    public func unseenLimit(next: UnsafeRawBufferPointer) -> UInt64? {
        if payloadLeft > 0 { return payloadLeft }
        guard atBoundary, let (length, size) = Self.wholeHeader(next, at: 0) else { return nil }
        let (total, overflow) = length.addingReportingOverflow(UInt64(size))
        return overflow ? .max : total
    }

    /// How many of `buf`'s first bytes end the frame under way, so that the stream is then
    /// between frames: 0 when it already is, nil when that frame goes on past `buf`.
    public func untilBoundary(_ buf: UnsafeRawBufferPointer) -> Int? {
        var walk = self
        var i = 0
        // A header cut in two is finished a byte at a time (it has at most 14).
        while !walk.header.isEmpty && i < buf.count {
            walk.advance(UnsafeRawBufferPointer(rebasing: buf[i..<(i + 1)]))
            i += 1
        }
        guard walk.header.isEmpty else { return nil }
        return walk.remaining <= UInt64(buf.count - i) ? i + Int(walk.remaining) : nil
    }

    /// Follows `count` bytes that were not seen (spliced past the gate): the first `seen` of them
    /// are known, the rest must lie within the payload those make known.
    public mutating func advance(seen: UnsafeRawBufferPointer, count: Int) {
        let known = min(seen.count, count)
        advance(UnsafeRawBufferPointer(rebasing: seen[0..<known]))
        let unseen = UInt64(count - known)
        if unseen == 0 { return }
        precondition(header.isEmpty && unseen <= remaining, "spliced past a frame boundary")
        remaining -= unseen
    }

    public mutating func advance(_ buf: UnsafeRawBufferPointer) {
        var i = 0
        while i < buf.count {
            if remaining > 0 {
                let take = Int(min(remaining, UInt64(buf.count - i)))
                remaining -= UInt64(take)
                i += take
                continue
            }
            if header.isEmpty, let (length, size) = Self.wholeHeader(buf, at: i) {
                // The common case: a whole header in this read, read in place.
                remaining = length
                i += size
                continue
            }
            header.append(buf[i])
            i += 1
            if let length = Self.payloadLength(header) {
                remaining = length
                header.removeAll(keepingCapacity: true)
            }
        }
    }

    /// The payload length and header size of a header that starts at `i` and is whole in `buf`.
    public static func wholeHeader(_ buf: UnsafeRawBufferPointer, at i: Int) -> (UInt64, Int)? {
        guard buf.count - i >= 2 else { return nil }
        let b1 = buf[i + 1]
        let short = UInt64(b1 & 0x7F)
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        let size = 2 + extended + (b1 & 0x80 != 0 ? 4 : 0)
        guard buf.count - i >= size else { return nil }
        if extended == 0 { return (short, size) }
        var length: UInt64 = 0
        for k in (i + 2)..<(i + 2 + extended) { length = length << 8 | UInt64(buf[k]) }
        return (length, size)
    }

    /// The payload length once `h` holds the whole header, nil while it needs more bytes.
    static func payloadLength(_ h: [UInt8]) -> UInt64? {
        guard h.count >= 2 else { return nil }
        let masked = h[1] & 0x80 != 0
        let short = UInt64(h[1] & 0x7F)
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        let total = 2 + extended + (masked ? 4 : 0)
        guard h.count >= total else { return nil }
        if extended == 0 { return short }
        var length: UInt64 = 0
        for k in 2..<(2 + extended) { length = length << 8 | UInt64(h[k]) }
        return length
    }

    /// A frame from the server side (unmasked): `first` is its first byte (FIN and opcode).
    public static func serverFrame(first: UInt8, payload: [UInt8]) -> [UInt8] {
        var out = [first]
        if payload.count < 126 {
            out.append(UInt8(payload.count))
        } else if payload.count < 65536 {
            out += [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: payload.count >> shift)) }
        }
        return out + payload
    }

    /// A close frame from the server side with `code` and a short reason.
    public static func closeFrame(code: UInt16, reason: StaticString) -> [UInt8] {
        let text = UnsafeBufferPointer(start: reason.utf8Start, count: min(reason.utf8CodeUnitCount, 123))
        return serverFrame(first: 0x88, payload: [UInt8(code >> 8), UInt8(code & 0xFF)] + text)
    }
}
