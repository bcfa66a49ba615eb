import KeygateCore
import KeygateHTTP
import KeygateIO

/// The phases between a parsed head and a finished answer: admit, send the head upstream,
/// pump the request body, relay the response, and the upstream's failures.
extension ClientConnection {
    // MARK: admit and send the head

    func begin(_ head: RequestHead, headBytes: Int) {
        requests += 1
        let snapshot = ctx.snapshot
        let startMicros = Clock.micros()
        let wallMillis = Timestamp.nowMillis()
        let requestID: [UInt8]
        if let fromClient = UpstreamHead.clientRequestID(head) {
            requestID = fromClient
        } else {
            var id = ctx.takeBuffer()
            ctx.appendRequestID(to: &id)
            requestID = id
        }
        var decision = Gate.decide(head, peer: peer, snapshot: snapshot, nowMillis: wallMillis, clientCertificate: clientCertificate)
        let verdict = Admission.admit(head, decision: &decision, snapshot: snapshot, nowNanos: startMicros * 1000, wallMillis: wallMillis)
        let exchange = Exchange(
            head: head, decision: decision, requestID: requestID, startMicros: startMicros, startWallMillis: wallMillis, headBytes: headBytes)
        ex = exchange
        switch verdict {
        case .refuse(let status, let message):
            answerError(status: status, message: message)
            return
        case .deny(let reason, let retryAfter, let headers):
            answerDenial(reason, retryAfter: retryAfter, extraHeaders: headers)
            return
        case .forward(let rateHeaders):
            exchange.rateHeaders = rateHeaders
        }
        exchange.isUpgrade = head.isWebSocketUpgrade

        var forwarded = ctx.takeBuffer()
        forwarded.reserveCapacity(head.bytes.count + 256)
        UpstreamHead.append(
            head, decision: decision, snapshot: snapshot, requestID: requestID, peer: peer, upgrade: exchange.isUpgrade, https: tls != nil,
            to: &forwarded)
        if exchange.bodyDone {
            // Reading stays on: a pipelined request is buffered (bounded in onBytes), and no
            // epoll_ctl is spent per request.
            phase = .waiting
            startUpstream(exchange, forwarded)
            return
        }
        phase = .body
        exchange.bodyStartMillis = ctx.loop.now
        deadline = ctx.loop.now + timeouts.bodyIdle
        if shouldBuffer(exchange) {
            // The app sees nothing until the body is here: a slow client holds no upstream.
            if case .contentLength(let n) = head.framing { forwarded.reserveCapacity(forwarded.count + Int(n)) }
            exchange.buffered = forwarded
            ctx.metrics.requestBufferBytes += forwarded.count
        } else if !startUpstream(exchange, forwarded) {
            return
        }
        if head.expectContinue && inbuf.isEmpty {
            // Envoy-style: keygate answers the expectation itself and streams the body on.
            sendToClient(Self.continueBytes)
        }
    }

    /// Whether this request's body is read whole before the upstream is contacted: it fits
    /// `limits.request_buffer` (a chunked body is tried, and streams once it outgrows it), and
    /// the loop's bound on buffered bodies has room.
    private func shouldBuffer(_ exchange: Exchange) -> Bool {
        let limit = ctx.snapshot.policy.limits.requestBuffer
        guard limit > 0 else { return false }
        if case .contentLength(let n) = exchange.head.framing, n > UInt64(limit) { return false }
        if ctx.metrics.requestBufferBytes + limit > LoopContext.requestBufferBudget {
            ctx.metrics.requestBufferFull += 1
            return false
        }
        return true
    }

    /// Takes an upstream connection and sends `bytes` (the head, and a buffered body). Returns
    /// false when that failed and the request was answered or closed instead.
    @discardableResult
    private func startUpstream(_ exchange: Exchange, _ bytes: [UInt8]) -> Bool {
        let upstream: UpstreamConnection
        if let pooled = ctx.pool.popLast() {
            upstream = pooled
        } else {
            guard let fresh = try? UpstreamConnection.open(ctx: ctx) else {
                answerUpstreamFailure(.upstream_unavailable)
                return false
            }
            upstream = fresh
        }
        attach(upstream, to: exchange)
        exchange.upstreamStartMicros = Clock.micros()
        exchange.replay = bytes.count <= Self.maxReplayBytes ? bytes : nil
        guard bytes.withUnsafeBytes({ upstream.send(one: $0) }) else {
            upstreamSendFailed(exchange, upstream)
            return false
        }
        if phase == .waiting {
            deadline = ctx.loop.now + (upstream.connecting ? timeouts.upstreamConnect : timeouts.upstreamResponse)
        }
        return true
    }

    func attach(_ u: UpstreamConnection, to exchange: Exchange) {
        u.client = self
        u.readPaused = false
        u.sendFailure = nil
        u.updateInterest()
        exchange.upstream = u
    }

    func dropUpstream(_ exchange: Exchange) {
        if let u = exchange.upstream {
            exchange.upstream = nil
            u.close()
        }
    }

    // MARK: the request body

    /// Feeds request body bytes upstream; returns how many belonged to the body.
    func feedBody(_ buf: UnsafeRawBufferPointer) -> Int {
        guard let exchange = ex else { return 0 }
        if exchange.buffered != nil { return bufferBody(exchange, buf) }
        guard let u = exchange.upstream else { return 0 }
        var sendFailed = false
        let used: Int
        do {
            used = try exchange.requestBody.feed(buf) { parts in
                if !sendFailed && !forwardBody(exchange, u, parts) { sendFailed = true }
            }
        } catch {
            requestBodyError(exchange, error)
            return buf.count
        }
        if refusedAsTooLarge(exchange) { return buf.count }
        if sendFailed {
            upstreamSendFailed(exchange, u)
            return used
        }
        if exchange.bodyDone { bodyComplete(exchange) }
        return used
    }

    /// Reads body bytes into the exchange's buffer; contacts the upstream once the body is
    /// whole, or once it outgrows the buffer (and streams from then on).
    private func bufferBody(_ exchange: Exchange, _ buf: UnsafeRawBufferPointer) -> Int {
        let used: Int
        do {
            used = try exchange.requestBody.feed(buf) { parts in
                for p in parts {
                    exchange.buffered!.append(contentsOf: p)
                    ctx.metrics.requestBufferBytes += p.count
                }
            }
        } catch {
            requestBodyError(exchange, error)
            return buf.count
        }
        if refusedAsTooLarge(exchange) { return buf.count }
        let limits = ctx.snapshot.policy.limits
        let whole = exchange.bodyDone
        guard whole || exchange.requestBody.payloadBytes > UInt64(limits.requestBuffer) else { return used }
        let bytes = exchange.buffered!
        releaseBuffer(exchange)
        if whole { phase = .waiting }
        if startUpstream(exchange, bytes), !whole, let u = exchange.upstream {
            // Outgrew the buffer: stream the rest, with the usual backpressure.
            pauseReading(u.out.count > Self.highWater)
        }
        return used
    }

    /// Gives a buffered body's memory back to the loop's bound.
    func releaseBuffer(_ exchange: Exchange) {
        ctx.metrics.requestBufferBytes -= exchange.buffered?.count ?? 0
        exchange.buffered = nil
    }

    /// A body past `limits.max_body_bytes` (chunked, so its size shows only as it arrives):
    /// answered 413 here. True when it was.
    private func refusedAsTooLarge(_ exchange: Exchange) -> Bool {
        let limit = ctx.snapshot.policy.limits.maxBodyBytes
        guard limit > 0 && exchange.requestBody.payloadBytes > limit else { return false }
        requestBodyError(exchange, HTTPParseError(413, "the request body is larger than \(limit) bytes"))
        return true
    }

    /// Sends body parts upstream, keeping a copy for a retry while the request is small.
    /// Returns false when the send failed.
    private func forwardBody(_ exchange: Exchange, _ u: UpstreamConnection, _ parts: WriteParts) -> Bool {
        if exchange.replay != nil {
            if exchange.replay!.count + parts.byteCount > Self.maxReplayBytes {
                exchange.replay = nil
            } else {
                for p in parts { exchange.replay!.append(contentsOf: p) }
            }
        }
        guard u.send(parts) else { return false }
        // Decided after every send: a later send in the same batch may have drained what an
        // earlier one left, and then no EPOLLOUT will come to resume reading.
        if phase == .body { pauseReading(u.out.count > Self.highWater) }
        return true
    }

    private func bodyComplete(_ exchange: Exchange) {
        guard phase == .body else { return }
        phase = .waiting
        if readPaused && out.count <= Self.highWater { pauseReading(false) }
        deadline = ctx.loop.now + timeouts.upstreamResponse
    }

    private func requestBodyError(_ exchange: Exchange, _ error: HTTPParseError) {
        dropUpstream(exchange)
        if exchange.relay.headDone {
            // The client is already hearing the upstream's answer: it cannot get ours.
            exchange.failure = .bad_request
            abort()
            return
        }
        answerError(status: error.status == 0 ? 400 : error.status, message: error.reason)
    }

    // MARK: upstream events

    func upstreamConnected(_ u: UpstreamConnection) {
        if phase == .waiting { deadline = ctx.loop.now + timeouts.upstreamResponse }
    }

    func upstreamDrained(_ u: UpstreamConnection) {
        if phase == .tunnel {
            tunnelUpstreamDrained(u)
            return
        }
        // The upstream took body bytes: that is progress, not a stall.
        guard phase == .body else { return }
        deadline = ctx.loop.now + timeouts.bodyIdle
        if readPaused && out.count <= Self.highWater { pauseReading(false) }
    }

    func upstreamBytes(_ u: UpstreamConnection, _ buf: UnsafeRawBufferPointer) {
        guard let exchange = ex, exchange.upstream === u else {
            u.close()
            return
        }
        defer { settle() }
        if phase == .tunnel {
            tunnelFromUpstream(exchange, buf)
            return
        }
        deadline = ctx.loop.now + timeouts.upstreamResponse
        do {
            try exchange.relay.feed(buf, context: { responseContext(exchange) }, headScratch: &ctx.headScratch, emit: { sendToClient($0) })
        } catch {
            upstreamBroken(exchange, error.description)
            return
        }
        if exchange.relay.switched {
            exchange.status = 101
            enterTunnel(exchange)
            return
        }
        guard exchange.relay.headDone else { return }
        exchange.status = exchange.relay.status
        exchange.keepClient = exchange.relay.plan.keepAlive
        if exchange.relay.trailingGarbage { exchange.upstreamReusable = false }
        if exchange.relay.isComplete {
            finishExchange(exchange)
        } else {
            applyClientBackpressure(u)
        }
    }

    /// What the client's head depends on when the upstream's final head arrives.
    private func responseContext(_ exchange: Exchange) -> ResponseRelay.Context {
        let keep =
            exchange.keepClient && exchange.head.keepAlive && !halfClosed && !ctx.draining
            && requests < ctx.snapshot.policy.limits.maxRequestsPerConnection && exchange.bodyDone
        return ResponseRelay.Context(
            requestVersion: exchange.head.version, keepAlive: keep, rateHeaders: exchange.rateHeaders, requestID: exchange.requestID,
            upgrade: exchange.isUpgrade)
    }

    /// Reading from the upstream pauses while the client has more than `highWater` unsent.
    private func applyClientBackpressure(_ u: UpstreamConnection) {
        let paused = out.count > Self.highWater
        // A client reading slowly is judged by `timeouts.send` (checked on every tick), not by
        // the upstream's silence while it is paused.
        if paused && !u.readPaused { deadline = ctx.loop.now + timeouts.send + 1000 }
        u.pauseReading(paused)
    }

    /// What the upstream's end and its failure share: the exchange it served, unless that is
    /// over already or was a tunnel (closed here).
    private func endingUpstream(_ u: UpstreamConnection) -> Exchange? {
        guard let exchange = ex, exchange.upstream === u else {
            u.close()
            return nil
        }
        exchange.upstreamReusable = false
        if phase == .tunnel {
            tunnelEnded(byUpstream: true)
            return nil
        }
        return exchange
    }

    func upstreamEOF(_ u: UpstreamConnection) {
        defer { settle() }
        guard let exchange = endingUpstream(u) else { return }
        if !exchange.relay.headDone {
            if !exchange.relay.hasPartialHead && retry(exchange, u, wroteNothing: false) { return }
            upstreamBroken(exchange, "upstream closed the connection before answering")
            return
        }
        if exchange.relay.upstreamClosed(emit: { sendToClient($0) }) {
            finishExchange(exchange)
        } else {
            // A body cut short must never pass for a complete one: logged as a failure, and
            // the client sees the connection close before the promised end.
            upstreamBroken(exchange, "upstream closed the connection in the middle of the body")
        }
    }

    func upstreamFailed(_ u: UpstreamConnection, _ error: IOError, wroteNothing: Bool) {
        defer { settle() }
        guard let exchange = endingUpstream(u) else { return }
        if !exchange.relay.headDone && !exchange.relay.hasPartialHead && retry(exchange, u, wroteNothing: wroteNothing) { return }
        upstreamBroken(exchange, "\(error)")
    }

    /// A send to the upstream failed while this connection was sending.
    private func upstreamSendFailed(_ exchange: Exchange, _ u: UpstreamConnection) {
        let failure = u.sendFailure ?? (IOError("write", 0), false)
        upstreamFailed(u, failure.error, wroteNothing: failure.wroteNothing)
    }

    /// A pooled connection that turned out stale: send the request again on a fresh one, once,
    /// when that cannot do harm.
    private func retry(_ exchange: Exchange, _ u: UpstreamConnection, wroteNothing: Bool) -> Bool {
        guard u.reused, !exchange.retried, let replay = exchange.replay, exchange.idempotent || wroteNothing else { return false }
        exchange.retried = true
        exchange.upstream = nil
        u.close()
        guard let fresh = try? UpstreamConnection.open(ctx: ctx) else { return false }
        attach(fresh, to: exchange)
        guard replay.withUnsafeBytes({ fresh.send(one: $0) }) else {
            dropUpstream(exchange)
            return false
        }
        return true
    }

    /// The upstream failed before a complete answer: 502 if the client has heard nothing,
    /// otherwise the connection is closed and the exchange logged as failed.
    func upstreamBroken(_ exchange: Exchange, _ why: String) {
        ctx.warnUpstream(why)
        dropUpstream(exchange)
        if exchange.relay.headDone {
            exchange.failure = .upstream_unavailable
            abort()
            return
        }
        answerUpstreamFailure(.upstream_unavailable)
    }

    // MARK: finishing

    func finishExchange(_ exchange: Exchange) {
        if let u = exchange.upstream {
            exchange.upstream = nil
            if exchange.upstreamReusable && exchange.relay.upstreamKeepAlive && exchange.bodyDone && u.out.isEmpty {
                ctx.releaseToPool(u)
            } else {
                u.close()
            }
        }
        record(exchange)
        ex = nil
        if !exchange.bodyDone {
            // The upstream answered before the body arrived; the rest of it is unread.
            closeAfterFlush(linger: true)
        } else if !exchange.keepClient {
            closeAfterFlush(linger: !inbuf.isEmpty)
        } else {
            nextRequest()
        }
    }

    func record(_ exchange: Exchange) {
        guard !exchange.recorded else { return }
        exchange.recorded = true
        if exchange.buffered != nil { releaseBuffer(exchange) }
        var e = exchange.usageEvent(endMicros: Clock.micros())
        if let t = tls, t.handshakeDone { e.tls = t.version }
        ctx.record(e)
        // The request's id and its head to the upstream go back for the loop's next requests.
        ctx.giveBack(exchange.requestID)
        if let head = exchange.replay {
            exchange.replay = nil
            ctx.giveBack(head)
        }
    }
}
