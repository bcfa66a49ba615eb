import KeygateHTTP

/// The response phase of one exchange: reads the upstream's answer as it arrives — interim
/// heads skipped, the final head rewritten for the client (`DownstreamHead`), the body re-framed
/// (`BodyReframer`) — and hands on the bytes to send. Pure: it never touches a socket, so the
/// connection that drives it decides alone when to write, pause or close.
public struct ResponseRelay {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// What the client's head depends on, asked for when the final head arrives.
    public struct Context {
        /// The request's version decides the answer's framing (whether it was a HEAD is the
        /// relay's own `requestWasHead`): not the whole head, whose copy per response cost three
        /// retains and releases.
        public var requestVersion: HTTPVersion
        public var keepAlive: Bool
        public var rateHeaders: [UInt8]
        public var requestID: [UInt8]
        /// The request asked for a WebSocket upgrade that the gate let through.
        public var upgrade: Bool
        public init(requestVersion: HTTPVersion, keepAlive: Bool, rateHeaders: [UInt8], requestID: [UInt8], upgrade: Bool = false) {
            self.requestVersion = requestVersion
            self.keepAlive = keepAlive
            self.rateHeaders = rateHeaders
            self.requestID = requestID
            self.upgrade = upgrade
        }
    }

    var scanner = HeadScanner(maxHeadBytes: 65536, maxLineBytes: 65536, maxRequestLineBytes: 65536)
    /// A head split across reads, kept until it is whole.
    var partial: [UInt8] = []
    var body: BodyReframer?
    let requestWasHead: Bool
    public private(set) var status = 0
    public private(set) var plan = DownstreamHead.Plan(keepAlive: false, chunkToClient: false)
    /// Whether the upstream said it keeps the connection.
    public private(set) var upstreamKeepAlive = false
    /// Bytes arrived after the body's end (or after a body-less answer): the connection cannot
    /// be trusted with another request.
    public private(set) var trailingGarbage = false

    /// The upstream switched to WebSocket (101): from here on the connection is a tunnel, and
    /// this relay is done. Bytes that came after the 101 head are in `tunnelLeftover`.
    public private(set) var switched = false
    public private(set) var tunnelLeftover: [UInt8] = []

    public init(requestWasHead: Bool) { self.requestWasHead = requestWasHead }

    public var headDone: Bool { body != nil }
    /// Some of a head has arrived: a retry on another connection is no longer safe.
    public var hasPartialHead: Bool { !partial.isEmpty }
    public var isComplete: Bool { body?.isDone ?? false }
    /// Payload bytes handed on to the client.
    public var bytesOut: UInt64 { body?.payloadBytes ?? 0 }

    /// Feeds bytes from the upstream; passes what the client should get to `emit`. The client's
    /// head is handed on together with the first body bytes, so both leave in one write. It is
    /// built in `headScratch`, the caller's storage, reused from one answer to the next.
    public mutating func feed(
        _ buf: UnsafeRawBufferPointer, context: () -> Context, headScratch: inout [UInt8], emit: (WriteParts) -> Void
    ) throws(Failure) {
        if headDone {
            try relayBody(buf, emit)
            return
        }
        let used: Int
        if partial.isEmpty {
            // The common case: the whole head in this read, parsed straight from it.
            used = try takeHeads(buf, context, &headScratch)
            if !headDone {
                partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[used...]))
                return
            }
            try relayWithHead(UnsafeRawBufferPointer(rebasing: buf[used...]), headScratch, emit)
        } else {
            partial.append(contentsOf: buf)
            let pending = partial
            partial = []
            var failure: Failure?
            pending.withUnsafeBytes { raw in
                do throws(Failure) {
                    let n = try takeHeads(raw, context, &headScratch)
                    if !headDone {
                        partial = Array(raw[n...])
                        return
                    }
                    try relayWithHead(UnsafeRawBufferPointer(rebasing: raw[n...]), headScratch, emit)
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
        }
    }

    /// The upstream closed. True when that completes the answer (a body delimited by the
    /// close); false when the answer was cut short.
    public mutating func upstreamClosed(emit: (WriteParts) -> Void) -> Bool {
        guard var b = body else { return false }
        defer { body = b }
        return b.finishAtClose(emit: emit)
    }

    /// Relays `rest` with the client's head `head` (just taken) in front of its first bytes.
    private mutating func relayWithHead(_ rest: UnsafeRawBufferPointer, _ head: [UInt8], _ emit: (WriteParts) -> Void) throws(Failure) {
        var failure: Failure?
        head.withUnsafeBytes { hb in
            var sentHead = false
            do throws(Failure) {
                try relayBody(rest) { parts in
                    if sentHead {
                        emit(parts)
                    } else {
                        sentHead = true
                        emit(parts.prepending(hb))
                    }
                }
            } catch {
                failure = error
            }
            if !sentHead && failure == nil { emit(WriteParts(hb)) }
        }
        if let failure { throw failure }
    }

    /// Parses heads from `buf`, skipping interim ones, up to the final head, and writes the
    /// client's head into `out`. Returns the bytes the heads took.
    private mutating func takeHeads(_ buf: UnsafeRawBufferPointer, _ context: () -> Context, _ out: inout [UInt8]) throws(Failure) -> Int {
        var offset = 0
        while !headDone && offset < buf.count {
            let rest = UnsafeRawBufferPointer(rebasing: buf[offset...])
            let end: Int?
            do {
                end = try scanner.scan(rest)
            } catch {
                throw Failure("response head too large or malformed")
            }
            guard let end else { return offset }
            let start = scanner.start
            // Parsed where it lies: the head is used before this buffer is, so no copy of it.
            let headBytes = UnsafeRawBufferPointer(rebasing: rest[start..<end]).assumingMemoryBound(to: UInt8.self)
            let r: ResponseHead
            do {
                r = try ResponseParser.parseInPlace(headBytes, requestWasHead: requestWasHead)
            } catch {
                throw Failure(error.reason)
            }
            offset += end
            scanner.reset()
            if r.status == 101 {
                // Only the WebSocket upgrade the client asked for, and the gate let through.
                let c = context()
                guard c.upgrade, DownstreamHead.acceptsWebSocket(r, bytes: headBytes) else { throw Failure("unexpected protocol switch") }
                out.removeAll(keepingCapacity: true)
                DownstreamHead.appendSwitch(r, bytes: headBytes, requestID: c.requestID, to: &out)
                status = 101
                switched = true
                tunnelLeftover = Array(buf[(offset)...])
                body = BodyReframer(.none, chunkOutput: false)
                return buf.count
            }
            if r.isInterim {
                // keygate answers Expect itself; interim answers are not relayed.
                continue
            }
            let c = context()
            out.removeAll(keepingCapacity: true)
            plan = DownstreamHead.append(
                r, bytes: headBytes, requestWasHead: requestWasHead, requestVersion: c.requestVersion, keepAlive: c.keepAlive,
                rateHeaders: c.rateHeaders, requestID: c.requestID, to: &out)
            status = r.status
            upstreamKeepAlive = r.keepAlive
            body = BodyReframer(r.framing, chunkOutput: plan.chunkToClient)
        }
        return offset
    }

    private mutating func relayBody(_ buf: UnsafeRawBufferPointer, _ emit: (WriteParts) -> Void) throws(Failure) {
        guard var b = body, !buf.isEmpty else { return }
        if b.isDone {
            trailingGarbage = true
            return
        }
        let used: Int
        do {
            used = try b.feed(buf, emit: emit)
        } catch {
            body = b
            throw Failure("malformed chunked response")
        }
        body = b
        if used < buf.count { trailingGarbage = true }
    }
}
