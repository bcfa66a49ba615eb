import KeygateCore
import KeygateHTTP
import KeygateIO

/// WebSocket tunnels: after the upstream's 101, bytes flow both ways unchanged, with
/// backpressure each way, for as long as the key that opened the tunnel stays valid.
extension ClientConnection {
    static let revokedClose = WebSocketFrames.closeFrame(code: 1008, reason: "key no longer valid")
    static let goingAwayClose = WebSocketFrames.closeFrame(code: 1001, reason: "gate shutting down")

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
        t.bytesIn += UInt64(buf.count)
        ctx.loop.lingerWanted = true
        deadline = ctx.loop.now + t.idleMillis
        guard u.send(one: buf) else {
            t.ended(.upstream)
            abort()
            return
        }
        if u.out.count > Self.highWater { pauseReading(true) }
    }

    func tunnelFromUpstream(_ exchange: Exchange, _ buf: UnsafeRawBufferPointer) {
        guard let t = exchange.tunnel else { return }
        t.bytesOut += UInt64(buf.count)
        ctx.loop.lingerWanted = true
        t.toClient.advance(buf)
        if t.end == nil { deadline = ctx.loop.now + t.idleMillis }
        sendToClient(one: buf)
        if let u = exchange.upstream, out.count > Self.highWater { u.pauseReading(true) }
    }

    /// The upstream took bytes: the client may send more (or, when it has left, the tunnel
    /// closes now that its last bytes are delivered).
    func tunnelUpstreamDrained(_ u: UpstreamConnection) {
        if ex?.tunnel?.end == .client {
            tunnelEnded(byUpstream: false)
            return
        }
        if readPaused && u.out.count <= Self.highWater { pauseReading(false) }
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
    /// closed (with a 1008 close frame when the stream to the client is between frames), once:
    /// a client slow to take what is queued gets one close frame, not one per tick.
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
        dropUpstream(exchange)
        if t.toClient.atBoundary { sendToClient(Self.revokedClose) }
        closeAfterFlush(linger: false)
    }
}
