import KeygateCore
import KeygateHTTP
import KeygateIO
#if canImport(Glibc)
import Glibc
#endif

/// One client connection and the request it is serving. Requests flow one way through named
/// phases: read head → decide → forward head and body → relay response → record → next.
final class ClientConnection: EventHandler {
    enum Phase {
        /// Waiting for (the rest of) a request head.
        case head
        /// Streaming the request body upstream.
        case body
        /// Request fully read; relaying the response.
        case waiting
        /// Answer sent, write side shut; reading and discarding until the client closes, so an
        /// unread body cannot turn our answer into a reset.
        case lingering
        case closed
    }

    /// Above this many unsent bytes, reading from the other side pauses.
    static let highWater = 256 << 10
    static let maxReplayBytes = 64 << 10
    static let lingerMillis: Int64 = 2000
    static let maxLingerBytes = 1 << 20

    let fd: Int32
    unowned let ctx: LoopContext
    let peer: IPAddress
    var slot = -1
    var phase = Phase.head
    var inbuf: [UInt8] = []
    var out = OutputBuffer()
    var scanner: HeadScanner
    var ex: Exchange?
    var requests = 0
    var readPaused = false
    var halfClosed = false
    var deadline: Int64 = 0
    var closeWhenFlushed = false
    var lingerWhenFlushed = false
    var lingerBytes = 0
    /// Set while `processInput` runs, so a request finished inside it does not recurse.
    var processing = false

    init(fd: Int32, ctx: LoopContext, peer: IPAddress) {
        self.fd = fd
        self.ctx = ctx
        self.peer = peer
        let limits = ctx.snapshot.policy.limits
        scanner = HeadScanner(maxHeadBytes: limits.maxHeaderBytes)
        deadline = ctx.loop.now + ctx.snapshot.policy.timeouts.headerRead
    }

    var timeouts: Policy.Timeouts { ctx.snapshot.policy.timeouts }

    // MARK: events

    func handle(events: UInt32, loop: EventLoop) {
        if phase == .closed { return }
        if events & Events.writable != 0 { flushOutput() }
        if phase == .closed { return }
        if events & Events.readable != 0 && !readPaused {
            readAvailable()
        } else if events & Events.error != 0 {
            // Reset or fully closed while we were not reading.
            abort()
        } else if events & Events.hangup != 0 && readPaused {
            // Peer half-closed while we wait on the upstream: finish this answer, then close.
            halfClosed = true
            ex?.keepClient = false
            setInterest()
        }
    }

    private func readAvailable() {
        let buf = ctx.loop.readBuffer
        do {
            switch try Sys.read(fd, buf) {
            case .done(0):
                clientEOF()
            case .done(let n):
                onBytes(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            case .wouldBlock:
                break
            }
        } catch {
            abort()
        }
    }

    private func clientEOF() {
        switch phase {
        case .waiting:
            halfClosed = true
            ex?.keepClient = false
            readPaused = true
            setInterest()
        default:
            abort()
        }
    }

    private func onBytes(_ buf: UnsafeRawBufferPointer) {
        switch phase {
        case .lingering:
            lingerBytes += buf.count
            if lingerBytes > Self.maxLingerBytes { abort() }
        case .body where inbuf.isEmpty:
            deadline = ctx.loop.now + timeouts.bodyIdle
            let used = feedBody(buf)
            if phase != .closed && used < buf.count {
                inbuf.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[used...]))
                processInput()
            }
        case .closed:
            break
        case .waiting:
            // Pipelined input while the answer is on its way: keep it, within a bound.
            inbuf.append(contentsOf: buf)
            if inbuf.count > ctx.snapshot.policy.limits.maxHeaderBytes + Self.highWater { pauseReading(true) }
        default:
            if phase == .head && inbuf.isEmpty && ex == nil {
                deadline = ctx.loop.now + timeouts.headerRead
            }
            inbuf.append(contentsOf: buf)
            processInput()
        }
    }

    /// Works through buffered input: heads, body bytes, pipelined requests.
    func processInput() {
        if processing { return }
        processing = true
        defer { processing = false }
        while true {
            switch phase {
            case .head:
                guard !inbuf.isEmpty else { return }
                let end: Int?
                do {
                    end = try inbuf.withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
                } catch {
                    protocolError(HTTPParseError.from(error))
                    return
                }
                guard let end else { return }
                let start = scanner.start
                let head: RequestHead
                do {
                    head = try inbuf.withUnsafeBytes { (raw) throws(HTTPParseError) -> RequestHead in
                        try RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[start..<end]), limits: requestLimits)
                    }
                } catch {
                    protocolError(HTTPParseError.from(error))
                    return
                }
                inbuf.removeFirst(end)
                scanner.reset()
                begin(head, headBytes: end)
            case .body:
                guard !inbuf.isEmpty else { return }
                deadline = ctx.loop.now + timeouts.bodyIdle
                // Moved out first: feeding the body may answer and close, which clears inbuf.
                let pending = inbuf
                inbuf = []
                let used = pending.withUnsafeBytes { feedBody($0) }
                if phase == .closed || phase == .lingering { return }
                if used < pending.count { inbuf = Array(pending[used...]) + inbuf }
                if phase == .body { return }
            case .waiting, .lingering, .closed:
                return
            }
        }
    }

    var requestLimits: RequestLimits {
        let l = ctx.snapshot.policy.limits
        return RequestLimits(maxHeadBytes: l.maxHeaderBytes, maxFields: l.maxHeaders)
    }

    // MARK: a request

    private func begin(_ head: RequestHead, headBytes: Int) {
        requests += 1
        let snapshot = ctx.snapshot
        let startMicros = Clock.micros()
        let requestID = UpstreamHead.clientRequestID(head) ?? ctx.nextRequestID()
        let wallMillis = Timestamp.nowMillis()
        let decision = Gate.decide(head, peer: peer, snapshot: snapshot, nowMillis: wallMillis)
        let exchange = Exchange(
            head: head, decision: decision, requestID: requestID, startMicros: startMicros, startWallMillis: wallMillis,
            headBytes: headBytes)
        ex = exchange

        if let why = UpstreamHead.refusal(head, snapshot: snapshot) {
            answerError(status: 400, error: "bad_request", message: why, close: true)
            return
        }
        if snapshot.policy.limits.maxBodyBytes > 0, case .contentLength(let n) = head.framing, n > snapshot.policy.limits.maxBodyBytes {
            answerError(status: 413, error: "bad_request", message: "the request body is larger than \(snapshot.policy.limits.maxBodyBytes) bytes", close: true)
            return
        }
        if let reason = decision.denial {
            answerDenial(reason)
            return
        }
        if !decision.isPublic, let limiter = decision.key?.limiter, !applyLimits(limiter, exchange) { return }
        decision.key?.markUsed(exchange.startWallMillis / 1000)

        // Allowed: take an upstream connection and send the head.
        let upstream: UpstreamConnection
        if let pooled = ctx.pool.popLast() {
            upstream = pooled
        } else {
            do {
                upstream = try UpstreamConnection.open(ctx: ctx)
            } catch {
                answerUpstreamFailure(.upstream_unavailable)
                return
            }
        }
        attach(upstream)
        var forwarded: [UInt8] = []
        forwarded.reserveCapacity(head.bytes.count + 256)
        UpstreamHead.append(head, decision: decision, snapshot: snapshot, requestID: requestID, peer: peer, to: &forwarded)
        exchange.upstreamStartMicros = Clock.micros()
        exchange.replay = forwarded
        let sent = forwarded.withUnsafeBytes { upstream.send([$0]) }
        if !sent || phase == .closed || ex !== exchange { return }

        switch head.framing {
        case .contentLength(let n):
            exchange.bodyRemaining = n
            phase = .body
        case .chunked:
            exchange.bodyDecoder = ChunkedDecoder()
            phase = .body
        case .none, .untilClose:
            exchange.bodyDone = true
            phase = .waiting
        }
        if phase == .body {
            if head.expectContinue && inbuf.isEmpty {
                // Envoy-style: keygate answers the expectation itself and streams the body on.
                sendToClient(Self.continueBytes)
            }
            deadline = ctx.loop.now + timeouts.bodyIdle
        } else {
            // Reading stays on: a pipelined request is buffered (bounded in onBytes), and no
            // epoll_ctl is spent per request.
            deadline = ctx.loop.now + (upstream.connecting ? timeouts.upstreamConnect : timeouts.upstreamResponse)
        }
    }

    /// Rate and quota: false when the request was refused (and answered) here.
    private func applyLimits(_ limiter: KeyLimiter, _ exchange: Exchange) -> Bool {
        let verdict = limiter.take(nowNanos: Clock.micros() * 1000, wallSeconds: exchange.startWallMillis / 1000)
        let limit = limiter.limit > 0 ? limiter.limit : (limiter.quota ?? 0)
        switch verdict {
        case .allowed(let remaining, let reset):
            exchange.rateHeaders = Array("RateLimit-Limit: \(limit)\r\nRateLimit-Remaining: \(remaining)\r\nRateLimit-Reset: \(reset)\r\n".utf8)
            return true
        case .rateLimited(let retry):
            exchange.decision.denial = .rate_limited
            answerDenial(.rate_limited, retryAfter: retry, extraHeaders: "RateLimit-Limit: \(limit)\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: \(retry)\r\n")
            return false
        case .quotaExceeded(let retry):
            exchange.decision.denial = .quota_exceeded
            answerDenial(.quota_exceeded, retryAfter: retry, extraHeaders: "RateLimit-Limit: \(limit)\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: \(retry)\r\n")
            return false
        }
    }

    static let continueBytes: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    private func attach(_ u: UpstreamConnection) {
        u.client = self
        u.readPaused = false
        u.updateInterest()
        ex?.upstream = u
    }

    /// Feeds request body bytes; returns how many belonged to the body.
    private func feedBody(_ buf: UnsafeRawBufferPointer) -> Int {
        guard let exchange = ex, let u = exchange.upstream else { return 0 }
        var used = 0
        if var decoder = exchange.bodyDecoder {
            do {
                used = try decoder.decode(buf) { data in
                    var header: [UInt8] = []
                    ChunkedEncoder.appendChunkHeader(data.count, to: &header)
                    header.withUnsafeBytes { h in
                        ChunkedEncoder.crlf.withUnsafeBytes { c in
                            forwardBody(exchange, u, [h, data, c])
                        }
                    }
                }
            } catch {
                exchange.bodyDecoder = decoder
                requestBodyError(error)
                return buf.count
            }
            exchange.bodyDecoder = decoder
            let limit = ctx.snapshot.policy.limits.maxBodyBytes
            if limit > 0 && decoder.totalBytes > limit {
                requestBodyError(HTTPParseError(413, "the request body is larger than \(limit) bytes"))
                return buf.count
            }
            if decoder.isDone && phase == .body {
                ChunkedEncoder.lastChunk.withUnsafeBytes { forwardBody(exchange, u, [$0]) }
            }
            exchange.bytesIn += UInt64(used)
            if decoder.isDone { bodyComplete(exchange) }
        } else {
            let take = Int(min(UInt64(buf.count), exchange.bodyRemaining))
            if take > 0 { forwardBody(exchange, u, [UnsafeRawBufferPointer(rebasing: buf[0..<take])]) }
            exchange.bodyRemaining -= UInt64(take)
            exchange.bytesIn += UInt64(take)
            used = take
            if exchange.bodyRemaining == 0 { bodyComplete(exchange) }
        }
        return used
    }

    private func forwardBody(_ exchange: Exchange, _ u: UpstreamConnection, _ parts: [UnsafeRawBufferPointer]) {
        guard ex === exchange, exchange.upstream === u, !u.closed else { return }
        if exchange.replay != nil {
            var size = exchange.replay!.count
            for p in parts { size += p.count }
            if size > Self.maxReplayBytes {
                exchange.replay = nil
            } else {
                for p in parts { exchange.replay!.append(contentsOf: p) }
            }
        }
        u.send(parts)
        // Decided after every send: a later send in the same batch may have drained what an
        // earlier one left, and then no EPOLLOUT will come to resume reading.
        if phase == .body { pauseReading(u.out.count > Self.highWater) }
    }

    private func bodyComplete(_ exchange: Exchange) {
        exchange.bodyDone = true
        guard phase == .body else { return }
        phase = .waiting
        if readPaused && out.count <= Self.highWater { pauseReading(false) }
        if exchange.responseHeadDone && exchange.upstream == nil {
            // The response already finished while the body was still arriving.
            finishExchange(exchange)
        } else {
            deadline = ctx.loop.now + timeouts.upstreamResponse
        }
    }

    private func requestBodyError(_ error: HTTPParseError) {
        guard let exchange = ex else { return }
        dropUpstream(exchange)
        if exchange.responseHeadDone {
            abort()
            return
        }
        answerError(status: error.status == 0 ? 400 : error.status, error: "bad_request", message: error.reason, close: true)
    }

    // MARK: upstream events

    func upstreamConnected(_ u: UpstreamConnection) {
        if phase == .waiting { deadline = ctx.loop.now + timeouts.upstreamResponse }
    }

    func upstreamDrained(_ u: UpstreamConnection) {
        // The upstream took body bytes: that is progress, not a stall.
        if phase == .body { deadline = ctx.loop.now + timeouts.bodyIdle }
        if phase == .body && readPaused && out.count <= Self.highWater {
            pauseReading(false)
        }
    }

    func upstreamBytes(_ u: UpstreamConnection, _ buf: UnsafeRawBufferPointer) {
        guard let exchange = ex, exchange.upstream === u else {
            u.close()
            return
        }
        deadline = ctx.loop.now + timeouts.upstreamResponse
        if exchange.responseHeadDone {
            relayBody(exchange, u, buf)
            return
        }
        // The common case — the whole head in this read, nothing buffered — parses straight
        // from the loop's read buffer; only a head split across reads is copied.
        if exchange.upstreamInput.isEmpty, let used = takeResponseHeads(exchange, buf) {
            if phase == .closed || ex !== exchange { return }
            if !exchange.responseHeadDone {
                exchange.upstreamInput.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[used...]))
            } else if used < buf.count {
                relayBody(exchange, u, UnsafeRawBufferPointer(rebasing: buf[used...]))
            } else if exchange.responseFraming == .none {
                finishExchange(exchange)
            }
        } else {
            exchange.upstreamInput.append(contentsOf: buf)
            let pending = exchange.upstreamInput
            exchange.upstreamInput = []
            guard let used = pending.withUnsafeBytes({ takeResponseHeads(exchange, $0) }) else { return }
            if phase == .closed || ex !== exchange { return }
            if !exchange.responseHeadDone {
                exchange.upstreamInput = Array(pending[used...])
            } else if used < pending.count {
                pending[used...].withUnsafeBytes { relayBody(exchange, u, $0) }
            } else if exchange.responseFraming == .none {
                finishExchange(exchange)
            }
        }
        // A head whose body has not arrived yet goes out now.
        if clientHead != nil && phase != .closed { sendToClient([UnsafeRawBufferPointer]()) }
    }

    /// Parses response heads from `buf`, skipping interim (1xx) ones, and starts the final
    /// answer. Returns how many bytes the heads took (the rest is body, or a partial head), or
    /// nil when the upstream broke the exchange.
    private func takeResponseHeads(_ exchange: Exchange, _ buf: UnsafeRawBufferPointer) -> Int? {
        var offset = 0
        while !exchange.responseHeadDone && offset < buf.count {
            let rest = UnsafeRawBufferPointer(rebasing: buf[offset...])
            let end: Int?
            do {
                end = try exchange.responseScanner.scan(rest)
            } catch {
                upstreamBroken(exchange, "response head too large or malformed")
                return nil
            }
            guard let end else { return offset }
            let start = exchange.responseScanner.start
            let response: ResponseHead
            do {
                response = try ResponseParser.parse(UnsafeRawBufferPointer(rebasing: rest[start..<end]), requestWasHead: exchange.head.isHead)
            } catch {
                upstreamBroken(exchange, error.reason)
                return nil
            }
            offset += end
            exchange.responseScanner.reset()
            if response.isInterim {
                // keygate handles Expect itself; interim answers are not relayed, and no upgrade
                // is ever asked for.
                if response.status == 101 {
                    upstreamBroken(exchange, "unexpected protocol switch")
                    return nil
                }
                continue
            }
            startResponse(exchange, response)
            if phase == .closed || ex !== exchange { return nil }
        }
        return offset
    }

    private func startResponse(_ exchange: Exchange, _ r: ResponseHead) {
        exchange.responseHeadDone = true
        exchange.status = r.status
        exchange.responseFraming = r.framing
        exchange.upstreamKeepAlive = r.keepAlive
        let head = exchange.head
        var keep = head.keepAlive && !halfClosed && !ctx.draining && requests < ctx.snapshot.policy.limits.maxRequestsPerConnection
        if !exchange.bodyDone { keep = false }
        var out: [UInt8] = []
        out.reserveCapacity(r.bytes.count + 128)
        out.append("HTTP/1.1 " as StaticString)
        out.append(contentsOf: r.bytes[9..<r.statusLine.upperBound])
        out.append("\r\n" as StaticString)
        let keepLength = head.isHead || r.status == 304
        var hasRequestID = false
        r.bytes.withUnsafeBufferPointer { p in
            for f in r.fields {
                let n = f.name
                if Self.responseHopByHop.contains(where: { p.equalsLowercased(n, $0) }) { continue }
                if p.equalsLowercased(n, "content-length") && !keepLength { continue }
                if !r.connectionOptions.isEmpty && r.connectionOptions.contains(where: { Self.sameName(p, $0, n) }) { continue }
                if p.equalsLowercased(n, "x-request-id") { hasRequestID = true }
                out.append(contentsOf: r.bytes[n])
                out.append(": " as StaticString)
                out.append(contentsOf: r.bytes[f.value])
                out.append("\r\n" as StaticString)
            }
        }
        switch r.framing {
        case .contentLength(let n):
            exchange.responseRemaining = n
            if !keepLength {
                out.append("Content-Length: " as StaticString)
                JSONBytes.appendInt(n, to: &out)
                out.append("\r\n" as StaticString)
            }
        case .chunked, .untilClose:
            if r.framing == .chunked { exchange.responseDecoder = ChunkedDecoder() }
            if head.version == .http11 {
                exchange.chunkToClient = true
                out.append("Transfer-Encoding: chunked\r\n" as StaticString)
            } else {
                keep = false  // an HTTP/1.0 client reads to the close
            }
        case .none:
            if !keepLength && r.status != 204 && r.status >= 200 {
                out.append("Content-Length: 0\r\n" as StaticString)
            }
        }
        out.append(contentsOf: exchange.rateHeaders)
        if !hasRequestID {
            out.append("X-Request-Id: " as StaticString)
            out.append(contentsOf: exchange.requestID)
            out.append("\r\n" as StaticString)
        }
        if !keep {
            out.append("Connection: close\r\n" as StaticString)
        } else if head.version == .http10 {
            out.append("Connection: keep-alive\r\n" as StaticString)
        }
        out.append("\r\n" as StaticString)
        exchange.keepClient = keep
        // Held back so the head leaves with the first body bytes in one write.
        clientHead = out
    }

    /// A response head waiting to go out with the next bytes for the client.
    var clientHead: [UInt8]?

    static let responseHopByHop: [StaticString] = [
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer", "proxy-authenticate",
    ]

    static func sameName(_ p: UnsafeBufferPointer<UInt8>, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var j = b.lowerBound
        for i in a {
            var x = p[i]
            var y = p[j]
            if x >= 0x41 && x <= 0x5A { x |= 0x20 }
            if y >= 0x41 && y <= 0x5A { y |= 0x20 }
            if x != y { return false }
            j += 1
        }
        return true
    }

    private func relayBody(_ exchange: Exchange, _ u: UpstreamConnection, _ buf: UnsafeRawBufferPointer) {
        switch exchange.responseFraming {
        case .none:
            // Bytes after a body-less response: this connection cannot be trusted again.
            exchange.upstreamReusable = false
            finishExchange(exchange)
        case .contentLength:
            let take = Int(min(UInt64(buf.count), exchange.responseRemaining))
            if take < buf.count { exchange.upstreamReusable = false }
            exchange.responseRemaining -= UInt64(take)
            exchange.bytesOut += UInt64(take)
            sendToClient([UnsafeRawBufferPointer(rebasing: buf[0..<take])])
            if phase == .closed || ex !== exchange { return }
            if exchange.responseRemaining == 0 { finishExchange(exchange) } else { applyClientBackpressure(u) }
        case .chunked:
            guard var decoder = exchange.responseDecoder else { return }
            let used: Int
            do {
                used = try decoder.decode(buf) { data in
                    exchange.bytesOut += UInt64(data.count)
                    relayChunk(exchange, data)
                }
            } catch {
                exchange.responseDecoder = decoder
                upstreamBroken(exchange, "malformed chunked response")
                return
            }
            exchange.responseDecoder = decoder
            if phase == .closed || ex !== exchange { return }
            if used < buf.count { exchange.upstreamReusable = false }
            if decoder.isDone {
                if exchange.chunkToClient { sendToClient(ChunkedEncoder.lastChunk) }
                if phase == .closed || ex !== exchange { return }
                finishExchange(exchange)
            } else {
                applyClientBackpressure(u)
            }
        case .untilClose:
            exchange.bytesOut += UInt64(buf.count)
            relayChunk(exchange, buf)
            if phase == .closed || ex !== exchange { return }
            applyClientBackpressure(u)
        }
    }

    private func relayChunk(_ exchange: Exchange, _ data: UnsafeRawBufferPointer) {
        if exchange.chunkToClient {
            var header: [UInt8] = []
            ChunkedEncoder.appendChunkHeader(data.count, to: &header)
            header.withUnsafeBytes { h in
                ChunkedEncoder.crlf.withUnsafeBytes { c in sendToClient([h, data, c]) }
            }
        } else {
            sendToClient([data])
        }
    }

    /// Reading from the upstream pauses while the client has more than `highWater` unsent.
    private func applyClientBackpressure(_ u: UpstreamConnection) {
        let paused = out.count > Self.highWater
        if paused && !u.readPaused { deadline = ctx.loop.now + timeouts.bodyIdle }
        u.pauseReading(paused)
    }

    func upstreamEOF(_ u: UpstreamConnection) {
        guard let exchange = ex, exchange.upstream === u else {
            u.close()
            return
        }
        exchange.upstreamReusable = false
        if !exchange.responseHeadDone {
            if exchange.upstreamInput.isEmpty && retry(exchange, u, wroteNothing: false) { return }
            upstreamBroken(exchange, "upstream closed the connection before answering")
            return
        }
        if exchange.responseFraming == .untilClose {
            if exchange.chunkToClient { sendToClient(ChunkedEncoder.lastChunk) }
            if phase == .closed || ex !== exchange { return }
            finishExchange(exchange)
        } else {
            // A body cut short must never pass for a complete one.
            abort()
        }
    }

    func upstreamFailed(_ u: UpstreamConnection, _ error: IOError, wroteNothing: Bool) {
        guard let exchange = ex, exchange.upstream === u else {
            u.close()
            return
        }
        exchange.upstreamReusable = false
        if !exchange.responseHeadDone {
            if exchange.upstreamInput.isEmpty && retry(exchange, u, wroteNothing: wroteNothing) { return }
            upstreamBroken(exchange, "\(error)")
            return
        }
        abort()
    }

    /// A pooled connection that turned out stale: send the request again on a fresh one, once,
    /// when that cannot do harm.
    private func retry(_ exchange: Exchange, _ u: UpstreamConnection, wroteNothing: Bool) -> Bool {
        guard u.reused, !exchange.retried, let replay = exchange.replay, exchange.idempotent || wroteNothing else { return false }
        exchange.retried = true
        exchange.upstream = nil
        u.close()
        let fresh: UpstreamConnection
        do {
            fresh = try UpstreamConnection.open(ctx: ctx)
        } catch {
            return false
        }
        attach(fresh)
        _ = replay.withUnsafeBytes { fresh.send([$0]) }
        return true
    }

    /// The upstream failed before a complete answer: 502/504 if the client has heard nothing,
    /// otherwise the connection is closed.
    private func upstreamBroken(_ exchange: Exchange, _ why: String) {
        dropUpstream(exchange)
        if exchange.responseHeadDone {
            abort()
            return
        }
        answerUpstreamFailure(.upstream_unavailable)
    }

    private func dropUpstream(_ exchange: Exchange) {
        if let u = exchange.upstream {
            exchange.upstream = nil
            u.close()
        }
    }

    // MARK: answers keygate gives itself

    private func answerDenial(_ reason: DenyReason, retryAfter: Int = 1, extraHeaders: String = "") {
        guard let exchange = ex else { return }
        exchange.status = reason.status
        // A refused request's body is never read: close so it cannot pass for the next request.
        let close = exchange.head.framing != .none || !exchange.head.keepAlive || ctx.draining
        var bytes: [UInt8] = []
        exchange.bytesOut = UInt64(
            ErrorResponse.appendDenial(
                reason, requestID: exchange.requestID, close: close, headOnly: exchange.head.isHead, retryAfter: retryAfter, extraHeaders: extraHeaders,
                to: &bytes))
        finishOwnAnswer(exchange, bytes, close: close, bodyUnread: exchange.head.framing != .none)
    }

    private func answerUpstreamFailure(_ reason: DenyReason) {
        guard let exchange = ex else { return }
        dropUpstream(exchange)
        exchange.status = reason.status
        let close = !exchange.bodyDone || !exchange.head.keepAlive || ctx.draining
        var bytes: [UInt8] = []
        exchange.bytesOut = UInt64(ErrorResponse.appendDenial(reason, requestID: exchange.requestID, close: close, headOnly: exchange.head.isHead, to: &bytes))
        failureReason = reason
        finishOwnAnswer(exchange, bytes, close: close, bodyUnread: !exchange.bodyDone)
    }

    /// The reason recorded for a request that was allowed but failed upstream.
    private var failureReason: DenyReason?

    private func answerError(status: Int, error: String, message: String, close: Bool) {
        guard let exchange = ex else { return }
        dropUpstream(exchange)
        exchange.status = status
        exchange.decision.denial = .bad_request
        var bytes: [UInt8] = []
        exchange.bytesOut = UInt64(ErrorResponse.append(status: status, error: error, message: message, requestID: exchange.requestID, close: true, to: &bytes))
        failureReason = .bad_request
        finishOwnAnswer(exchange, bytes, close: true, bodyUnread: !exchange.bodyDone)
    }

    private func finishOwnAnswer(_ exchange: Exchange, _ bytes: [UInt8], close: Bool, bodyUnread: Bool) {
        sendToClient(bytes)
        if phase == .closed { return }
        record(exchange)
        ex = nil
        if close {
            closeAfterFlush(linger: bodyUnread || !inbuf.isEmpty)
        } else {
            nextRequest()
        }
    }

    /// A request that did not parse: answer (unless it cannot read one) and close.
    private func protocolError(_ error: HTTPParseError) {
        guard error.status != 0 else {
            abort()
            return
        }
        var bytes: [UInt8] = []
        let requestID = ctx.nextRequestID()
        ErrorResponse.append(status: error.status, error: "bad_request", message: error.reason, requestID: requestID, close: true, to: &bytes)
        sendToClient(bytes)
        if phase == .closed { return }
        var e = UsageEvent()
        e.tsMillis = Timestamp.nowMillis()
        e.requestID = requestID
        e.reason = .bad_request
        e.status = error.status
        e.client = peer
        e.bytesIn = UInt64(inbuf.count)
        ctx.record(e)
        inbuf = []
        closeAfterFlush(linger: true)
    }

    // MARK: finishing

    private func finishExchange(_ exchange: Exchange) {
        if clientHead != nil { sendToClient([UnsafeRawBufferPointer]()) }
        if phase == .closed { return }
        if let u = exchange.upstream {
            exchange.upstream = nil
            if exchange.upstreamReusable && exchange.upstreamKeepAlive && exchange.bodyDone && u.out.isEmpty {
                ctx.releaseToPool(u)
            } else {
                u.close()
            }
        }
        if !exchange.bodyDone {
            // The upstream answered before the body arrived; the rest of it is unread.
            record(exchange)
            ex = nil
            closeAfterFlush(linger: true)
            return
        }
        record(exchange)
        ex = nil
        if !exchange.keepClient {
            closeAfterFlush(linger: !inbuf.isEmpty)
        } else {
            nextRequest()
        }
    }

    private func nextRequest() {
        phase = .head
        scanner.reset()
        deadline = ctx.loop.now + (inbuf.isEmpty ? timeouts.idle : timeouts.headerRead)
        if !halfClosed { pauseReading(false) }
        if !inbuf.isEmpty { processInput() }
    }

    private func record(_ exchange: Exchange) {
        guard !exchange.recorded else { return }
        exchange.recorded = true
        var e = exchange.usageEvent(endMicros: Clock.micros())
        if let failure = failureReason {
            e.reason = failure
            failureReason = nil
        }
        ctx.record(e)
    }

    // MARK: output and closing

    func sendToClient(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { sendToClient([$0]) }
    }

    func sendToClient(_ parts: [UnsafeRawBufferPointer]) {
        if phase == .closed { return }
        if let head = clientHead {
            clientHead = nil
            head.withUnsafeBytes { h in
                var all = [UnsafeRawBufferPointer]()
                all.reserveCapacity(parts.count + 1)
                all.append(h)
                all.append(contentsOf: parts)
                sendToClient(all)
            }
            return
        }
        do {
            if try !out.send(fd, parts: parts, canWrite: true) { setInterest() }
        } catch {
            abort()
        }
    }

    private func flushOutput() {
        do {
            guard try out.flush(fd) else { return }
        } catch {
            abort()
            return
        }
        setInterest()
        if closeWhenFlushed {
            closeWhenFlushed = false
            finishClose()
            return
        }
        if let exchange = ex, let u = exchange.upstream, u.readPaused, phase == .waiting || phase == .body {
            u.pauseReading(false)
            deadline = ctx.loop.now + timeouts.upstreamResponse
        }
    }

    private func closeAfterFlush(linger: Bool) {
        lingerWhenFlushed = linger
        pauseReading(true)
        if out.isEmpty {
            finishClose()
        } else {
            closeWhenFlushed = true
            deadline = ctx.loop.now + timeouts.bodyIdle
        }
    }

    private func finishClose() {
        if lingerWhenFlushed && !halfClosed {
            shutdown(fd, Int32(SHUT_WR))
            phase = .lingering
            inbuf = []
            deadline = ctx.loop.now + Self.lingerMillis
            pauseReading(false)
        } else {
            abort()
        }
    }

    /// Closes now. An unfinished exchange is recorded (499 when the client gave up first).
    func abort() {
        if phase == .closed { return }
        phase = .closed
        if let exchange = ex {
            dropUpstream(exchange)
            // Nothing answered yet: logged as nginx does when the client gives up first.
            if exchange.status == 0 { exchange.status = 499 }
            record(exchange)
            ex = nil
        }
        ctx.remove(self)
        ctx.loop.close(fd)
        ctx.server.connectionClosed(from: peer)
    }

    func pauseReading(_ paused: Bool) {
        if readPaused == paused { return }
        readPaused = paused
        setInterest()
    }

    private func setInterest() {
        if phase == .closed { return }
        var interest: UInt32 = readPaused || halfClosed ? 0 : Events.read
        if !out.isEmpty { interest |= Events.write }
        ctx.loop.setInterest(fd, interest)
    }

    // MARK: timeouts

    func checkDeadline(_ now: Int64) {
        guard deadline > 0, now >= deadline, phase != .closed else { return }
        switch phase {
        case .head:
            if inbuf.isEmpty {
                abort()  // idle keep-alive (or a connection that never sent anything)
            } else {
                protocolError(HTTPParseError(408, "the request head did not arrive in time"))
            }
        case .body:
            if let exchange = ex, !exchange.responseHeadDone, out.isEmpty {
                dropUpstream(exchange)
                answerError(status: 408, error: "bad_request", message: "the request body did not arrive in time", close: true)
            } else {
                abort()
            }
        case .waiting:
            if let exchange = ex, !exchange.responseHeadDone {
                let connecting = exchange.upstream?.connecting ?? false
                answerUpstreamFailure(connecting ? .upstream_unavailable : .upstream_timeout)
            } else {
                abort()
            }
        case .lingering, .closed:
            abort()
        }
    }

    /// Used when draining: an idle connection closes now, a busy one after its answer.
    func drain() {
        if phase == .head && inbuf.isEmpty && ex == nil {
            abort()
        } else {
            ex?.keepClient = false
        }
    }
}

enum Clock {
    static func micros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}

extension HTTPParseError {
    /// Closures passed to `withUnsafeBytes` lose the typed error; this brings it back.
    static func from(_ error: any Error) -> HTTPParseError {
        error as? HTTPParseError ?? HTTPParseError(400, "malformed message")
    }
}
