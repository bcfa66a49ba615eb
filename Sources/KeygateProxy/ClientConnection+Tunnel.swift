import KeygateCore
import KeygateHTTP
import KeygateIO

/// WebSocket tunnels: after the upstream's 101, bytes flow both ways unchanged, with
/// backpressure each way, for as long as the key that opened the tunnel stays valid.
extension ClientConnection {
    static let revokedClose = WebSocketFrames.closeFrame(code: 1008, reason: "key no longer valid")
    static let goingAwayClose = WebSocketFrames.closeFrame(code: 1001, reason: "gate shutting down")
    /// A direction splices once a read brings at least this much, and reads into the loop's
    /// buffer again when one brings less: below it the pipe costs more than the copies it saves,
    /// and the peers receiving spliced pages pay more per message (measured at 16 and 32 KiB).
    static let spliceAbove = 32 << 10
    /// How long a frame under way when its tunnel's key ends may take to finish before the
    /// tunnel closes without a close frame: short enough to close within a second.
    static let keyCloseFinishMillis: Int64 = 500

    /// The 101 went to the client: from now on the connection is a tunnel.
    func enterTunnel(_ exchange: Exchange) {
        phase = .tunnel
        exchange.keepClient = false
        exchange.tunnel = TunnelState(
            startMicros: Clock.micros(), idleMillis: timeouts.tunnelIdle, checked: ctx.snapshot, key: exchange.decision.isPublic ? nil : exchange.decision.key)
        ctx.metrics.tunnelsOpen += 1
        deadline = ctx.loop.now + timeouts.tunnelIdle
        // Pipelined bytes sent after the handshake belong to the tunnel.
        if !inbuf.isEmpty {
            let pending = inbuf
            inbuf = []
            pending.withUnsafeBytes { tunnelFromClient($0) }
        }
        if !exchange.relay.tunnelLeftover.isEmpty {
            exchange.relay.tunnelLeftover.withUnsafeBytes { tunnelFromUpstream(exchange, $0) }
        }
    }

    func tunnelFromClient(_ buf: UnsafeRawBufferPointer) {
        guard let exchange = ex, let u = exchange.upstream, let t = exchange.tunnel else { return }
        movedFromClient(t, buf.count)
        guard u.send(one: buf) else {
            t.ended(.upstream)
            abort()
            return
        }
        if u.out.count > Self.highWater { pauseReading(true) }
    }

    func tunnelFromUpstream(_ exchange: Exchange, _ buf: UnsafeRawBufferPointer) {
        guard let t = exchange.tunnel else { return }
        if t.end == .key {
            // The key ended inside a frame: the rest of that frame goes, and nothing after it.
            let frameEnd = t.toClient.untilBoundary(buf)
            let rest = UnsafeRawBufferPointer(rebasing: buf[0..<(frameEnd ?? buf.count)])
            t.toClient.advance(rest)
            movedToClient(t, rest.count)
            sendToClient(one: rest)
            if frameEnd != nil { closeForKey(exchange) }
            return
        }
        largeToClient = buf.count >= Self.spliceAbove
        t.toClient.advance(buf)
        movedToClient(t, buf.count)
        sendToClient(one: buf)
        if let u = exchange.upstream, out.count > Self.highWater { u.pauseReading(true) }
    }

    /// What every read from the client into the tunnel counts, read or spliced.
    private func movedFromClient(_ t: TunnelState, _ count: Int) {
        t.bytesIn += UInt64(count)
        largeFromClient = count >= Self.spliceAbove
        ctx.loop.lingerWanted = true
        deadline = ctx.loop.now + t.idleMillis
    }

    /// What every read from the app for the client counts, read or spliced.
    private func movedToClient(_ t: TunnelState, _ count: Int) {
        t.bytesOut += UInt64(count)
        ctx.loop.lingerWanted = true
        if t.end == nil { deadline = ctx.loop.now + t.idleMillis }
    }

    /// Client bytes for the app moved through a pipe, never copied into the gate. Returns false
    /// when this read goes through the loop's buffer instead: small messages, TLS on either
    /// side, bytes already queued for the app, or no pipe to be had.
    func spliceFromClient() -> Bool {
        // The flag first: small messages pay one load here, nothing more.
        guard largeFromClient, tls == nil, let exchange = ex, let t = exchange.tunnel,
              let u = exchange.upstream, u.tls == nil, u.out.isEmpty else { return false }
        switch ctx.pipes.fill(from: fd, atMost: .max) {
        case .noPipe:
            return false
        case .nothingReady:
            break
        case .endOfStream:
            clientEOF()
        case .failed:
            abort()
        case .moved(let pipe, let n):
            movedFromClient(t, n)
            guard u.send(piped: pipe, count: n) else {
                t.ended(.upstream)
                abort()
                return true
            }
            if u.out.count > Self.highWater { pauseReading(true) }
        }
        return true
    }

    /// App bytes for the client moved through a pipe, a frame at a time so the gate still knows
    /// where frames end (for its own close frame): between frames the next header is peeked,
    /// then at most the rest of that frame is spliced. Returns false when this read goes
    /// through the loop's buffer instead (as `spliceFromClient`, or a header not whole yet).
    func spliceFromUpstream(_ u: UpstreamConnection) -> Bool {
        guard largeToClient, tls == nil, let exchange = ex, exchange.upstream === u, let t = exchange.tunnel,
              out.isEmpty, !writeFailed else { return false }
        defer { settle() }
        // The longest frame header, peeked in place when the stream is between frames.
        var header: (UInt64, UInt64) = (0, 0)
        var seen = 0
        if t.toClient.payloadLeft == 0 {
            guard t.toClient.atBoundary else { return false }
            let peeked = withUnsafeMutableBytes(of: &header) { raw in
                try? Sys.peek(u.fd, UnsafeMutableRawBufferPointer(rebasing: raw[0..<14]))
            }
            // An error or the end of the stream is the plain read's to report.
            guard let peeked, case .done(let n) = peeked else { return peeked == .wouldBlock }
            seen = n
        }
        let limit = withUnsafeBytes(of: &header) { t.toClient.unseenLimit(next: UnsafeRawBufferPointer(rebasing: $0[0..<seen])) }
        guard let limit else { return false }
        if seen > 0 && limit < Self.spliceAbove {
            largeToClient = false
            return false
        }
        switch ctx.pipes.fill(from: u.fd, atMost: Int(min(limit, UInt64(Int.max)))) {
        case .noPipe:
            return false
        case .nothingReady:
            break
        case .endOfStream:
            upstreamEOF(u)
        case .failed(let error):
            upstreamFailed(u, error, wroteNothing: false)
        case .moved(let pipe, let n):
            withUnsafeBytes(of: &header) { t.toClient.advance(seen: UnsafeRawBufferPointer(rebasing: $0[0..<seen]), count: n) }
            movedToClient(t, n)
            write { (out) throws(IOError) in try out.send(fd, piped: pipe, count: n, pool: ctx.pipes) }
            if t.end == .key && t.toClient.atBoundary {
                closeForKey(exchange)
            } else if out.count > Self.highWater {
                u.pauseReading(true)
            }
        }
        return true
    }

    /// The upstream took bytes: the client may send more (or, when it has left, the tunnel
    /// closes now that its last bytes are delivered).
    func tunnelUpstreamDrained(_ u: UpstreamConnection) {
        if ex?.tunnel?.end == .client {
            tunnelEnded(byUpstream: false)
            return
        }
        // A tunnel closing for its key reads nothing more from the client.
        if readPaused && u.out.count <= Self.highWater && ex?.tunnel?.end == nil { pauseReading(false) }
    }

    /// The gate is stopping and `shutdown_grace` is over: closes now; a tunnel's client is told
    /// first with a 1001 close frame ("going away", so it reconnects) when its stream is between
    /// frames.
    func closeForShutdown() {
        if phase == .tunnel, let t = ex?.tunnel {
            t.ended(.shutdown)
            if t.toClient.atBoundary && t.end == .shutdown { sendToClient(Self.goingAwayClose) }
        }
        abort()
    }

    /// One side closed: the other is closed once what is on its way has left.
    func tunnelEnded(byUpstream: Bool) {
        guard let exchange = ex else { return }
        exchange.tunnel?.ended(byUpstream ? .upstream : .client)
        if !byUpstream, let u = exchange.upstream, !u.out.isEmpty {
            // The client left with bytes for the app still queued here: they go first, within
            // `timeouts.body_idle`, as nginx finishes a tunnel's buffer before closing it.
            halfClosed = true
            setInterest()
            deadline = ctx.loop.now + timeouts.bodyIdle
            return
        }
        dropUpstream(exchange)
        if byUpstream {
            closeAfterFlush(linger: false)
        } else {
            abort()
        }
    }

    /// Runs on every tick: a tunnel whose key was revoked, disabled, deleted or has expired is
    /// closed with a 1008 close frame, once: a client slow to take what is queued gets one close
    /// frame, not one per tick. Inside a frame, the close frame waits for that frame's end, which
    /// the app has `keyCloseFinishMillis` to send; nothing more from either side is relayed.
    func checkTunnelKey(_ exchange: Exchange) {
        guard let t = exchange.tunnel, t.end == nil, let opened = t.key else { return }
        if t.checked !== ctx.snapshot {
            t.checked = ctx.snapshot
            t.key = ctx.snapshot.keys[opened.digest]
        }
        // What a request with the key would now be refused for; gone from the store is a delete.
        let ended: DenyReason? = if let key = t.key { Gate.endedKeyDenial(key, now: Timestamp.nowMillis()) } else { .unknown_key }
        guard let why = ended else { return }
        t.ended(.key)
        ctx.tunnelClosedForKey(opened.record.id, why: why == .unknown_key ? "deleted" : why.rawValue)
        if t.toClient.atBoundary || exchange.upstream == nil {
            closeForKey(exchange)
            return
        }
        pauseReading(true)
        deadline = ctx.loop.now + Self.keyCloseFinishMillis
    }

    /// The stream to the client is between frames (or its app is gone): the 1008 close frame
    /// goes last, then the socket closes.
    private func closeForKey(_ exchange: Exchange) {
        dropUpstream(exchange)
        if exchange.tunnel?.toClient.atBoundary ?? false { sendToClient(Self.revokedClose) }
        closeAfterFlush(linger: false)
    }
}
