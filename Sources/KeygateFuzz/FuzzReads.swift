// Differential checks: what the gate makes of bytes from a peer must not depend on how the
// bytes were split into reads (a request head, an upstream's answer, a WebSocket stream).

import KeygateCore
import KeygateHTTP

/// What the client gets for one upstream answer, whatever reads it arrived in: the relay's
/// verdict and the client-visible bytes (head, then payload with any chunk framing removed).
struct RelayOutcome: Equatable {
    var failure: String?
    var status = 0
    var complete = false
    var completeAtClose = false
    var trailingGarbage = false
    var switched = false
    var tunnelBytes: [UInt8] = []
    var head: [UInt8] = []
    var payload: [UInt8] = []
    var payloadCount: UInt64 = 0
}

/// Feeds `bytes` to a fresh relay in the pieces `cuts` marks, as the upstream connection does
/// (bytes after a switch go to the tunnel), then closes the upstream.
func relayOutcome(_ bytes: UnsafeRawBufferPointer, cuts: [Int], requestWasHead: Bool, upgrade: Bool) -> RelayOutcome {
    var relay = ResponseRelay(requestWasHead: requestWasHead)
    let context = ResponseRelay.Context(
        requestVersion: .http11, keepAlive: true, rateHeaders: [], requestID: Array("fuzz".utf8), upgrade: upgrade)
    var out = RelayOutcome()
    var wire: [UInt8] = []
    // Storage that held another answer's head, as a connection's does: none of it may show.
    var scratch = Array("HTTP/1.1 999 Stale\r\n\r\n".utf8)
    var start = 0
    for end in cuts + [bytes.count] {
        let piece = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        start = end
        if relay.switched {
            out.tunnelBytes.append(contentsOf: piece)
            continue
        }
        do {
            try relay.feed(piece, context: { context }, headScratch: &scratch) { parts in
                for p in parts { wire.append(contentsOf: p) }
            }
        } catch {
            out.failure = error.description
            return out
        }
        if relay.switched { out.tunnelBytes.append(contentsOf: relay.tunnelLeftover) }
    }
    out.status = relay.status
    out.complete = relay.isComplete
    out.switched = relay.switched
    out.trailingGarbage = relay.trailingGarbage
    if !relay.switched {
        out.completeAtClose = relay.upstreamClosed { parts in
            for p in parts { wire.append(contentsOf: p) }
        }
    }
    out.payloadCount = relay.bytesOut
    splitClientBytes(wire, chunked: relay.plan.chunkToClient, into: &out)
    return out
}

/// Splits what went to the client into its head and its payload, de-chunking when the relay
/// chunked the body; chunking that does not decode is a bug.
func splitClientBytes(_ wire: [UInt8], chunked: Bool, into out: inout RelayOutcome) {
    var scanner = wideScanner()
    let headEnd = (try? wire.withUnsafeBytes { try scanner.scan($0) }) ?? nil ?? wire.count
    out.head = Array(wire[0..<headEnd])
    let body = Array(wire[headEnd...])
    guard chunked, !out.switched else {
        out.payload = body
        return
    }
    var decoder = ChunkedDecoder()
    var payload: [UInt8] = []
    let used = body.withUnsafeBytes { raw in
        (try? decoder.decode(raw, onData: { payload.append(contentsOf: $0) })) ?? -1
    }
    if used != body.count { fatalError("the relay's chunked output does not decode (\(used) of \(body.count) bytes)") }
    out.payload = payload
}

/// The same answer whole, cut at one or two points, and in one-byte reads for its first 64
/// bytes: the client must get the same thing every time.
func fuzzAnswer(_ bytes: UnsafeRawBufferPointer) {
    let n = bytes.count
    guard n >= 2 else { return }
    // The request's kind and the cuts come from the input's length and hash, not its first
    // bytes, which a well-formed answer always starts with.
    let requestWasHead = n & 1 != 0
    let upgrade = n & 2 == 0
    let whole = relayOutcome(bytes, cuts: [], requestWasHead: requestWasHead, upgrade: upgrade)
    let hash = inputHash(bytes)
    let a = Int(hash % UInt64(n + 1))
    let b = a + Int((hash >> 32) % UInt64(n - a + 1))
    for cuts in [[a], [a, b], [n / 2], Array(stride(from: 1, to: min(n, 64), by: 1))] {
        let split = relayOutcome(bytes, cuts: cuts, requestWasHead: requestWasHead, upgrade: upgrade)
        if split != whole { fatalError("the answer's outcome depends on its reads: cuts \(cuts.prefix(3))…\nwhole: \(whole)\nsplit: \(split)") }
    }
    if whole.failure == nil && !whole.switched && whole.payloadCount != UInt64(whole.payload.count) {
        fatalError("payload count \(whole.payloadCount) against \(whole.payload.count) bytes sent")
    }
}

/// A scanner for heads the gate wrote: limits wide enough for what it adds to a head that was
/// at the client's limits.
func wideScanner() -> HeadScanner {
    HeadScanner(maxHeadBytes: 1 << 20, maxLineBytes: 1 << 20, maxRequestLineBytes: 1 << 20)
}

/// FNV-1a of the input: where to cut it, the same for the same input.
func inputHash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
    return hash
}

/// A WebSocket stream's frame boundaries must not depend on how the stream was read.
func fuzzFrames(_ bytes: UnsafeRawBufferPointer) {
    var whole = WebSocketFrames()
    whole.advance(bytes)
    var bytewise = WebSocketFrames()
    // Where the stream is between frames: after byte i, for each i in `boundaries`.
    var boundaries: [Int] = []
    for i in 0..<bytes.count {
        bytewise.advance(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + 1)]))
        if bytewise.atBoundary { boundaries.append(i + 1) }
    }
    if whole.atBoundary != bytewise.atBoundary { fatalError("frame boundary depends on the reads (\(boundaries.count) boundaries seen)") }
    // The gate's close for a key (ClientConnection+Tunnel) lets the frame under way end first:
    // cut anywhere, `untilBoundary` must find the next boundary a bytewise walk finds.
    let cut = Int((inputHash(bytes) >> 8) % UInt64(bytes.count + 1))
    var head = WebSocketFrames()
    head.advance(UnsafeRawBufferPointer(rebasing: bytes[0..<cut]))
    let next = head.atBoundary ? cut : boundaries.first { $0 > cut }
    if head.untilBoundary(UnsafeRawBufferPointer(rebasing: bytes[cut...])) != next.map({ $0 - cut }) {
        fatalError("untilBoundary missed the end of the frame under way (cut at \(cut))")
    }
    // The gate's splice walk (ClientConnection+Tunnel): what `unseenLimit` allows (at most
    // `cap`), knowing the 14 bytes a peek would show; one read where it allows nothing.
    let cap = 1 + Int(inputHash(bytes) % 64)
    var spliced = WebSocketFrames()
    var at = 0
    while at < bytes.count {
        let peek = UnsafeRawBufferPointer(rebasing: bytes[at..<min(at + 14, bytes.count)])
        let take = spliced.unseenLimit(next: peek).map { Int(min($0, UInt64(cap))) } ?? cap
        spliced.advance(seen: peek, count: min(take, bytes.count - at))
        at += min(take, bytes.count - at)
    }
    if spliced.atBoundary != whole.atBoundary { fatalError("the splice walk lost a frame boundary") }
}

/// What the gate makes of a request head arriving in the reads `cuts` marks, with the gate's
/// own relation between scanner and parser limits (scaled down so the fuzzer reaches them):
/// refused, or where the head ends and what it says.
func requestVerdict(_ bytes: UnsafeRawBufferPointer, cuts: [Int]) -> String {
    var scanner = HeadScanner(maxHeadBytes: 4096, maxLineBytes: 1024, maxRequestLineBytes: 1024 + 64)
    let limits = RequestLimits(maxHeadBytes: 4096, maxFields: 100, maxLineBytes: 1024, maxTargetBytes: 1024)
    var end: Int? = nil
    for cut in cuts + [bytes.count] {
        do {
            end = try scanner.scan(UnsafeRawBufferPointer(rebasing: bytes[0..<cut]))
        } catch {
            return "refused"
        }
        if end != nil { break }
    }
    guard let end else { return "incomplete" }
    guard let head = try? RequestParser.parse(UnsafeRawBufferPointer(rebasing: bytes[scanner.start..<end]), limits: limits) else {
        return "refused"
    }
    return "end \(end): \(head.methodString()) \(head.bytes.string(head.target)) \(head.fields.count) fields \(head.framing) keepAlive \(head.keepAlive)"
}

/// A request accepted in one read is accepted in any reads, and the other way round: a limit
/// checked on an incomplete head must never refuse what the whole head would pass.
func fuzzRequestReads(_ bytes: UnsafeRawBufferPointer) {
    let n = bytes.count
    guard n >= 2 else { return }
    let whole = requestVerdict(bytes, cuts: [])
    let a = Int((inputHash(bytes) >> 16) % UInt64(n + 1))
    for cuts in [[a], [n / 2], Array(stride(from: 1, to: n, by: max(1, n / 64)))] {
        let split = requestVerdict(bytes, cuts: cuts.filter { $0 > 0 && $0 < n })
        if split != whole { fatalError("the request's verdict depends on its reads: cuts \(cuts.prefix(3))…\nwhole: \(whole)\nsplit: \(split)") }
    }
}
