import KeygateCore
import KeygateHTTP
import KeygateIO
#if canImport(Glibc)
import Glibc
#endif

/// One client connection: its socket, its input and output, and the phase its current request
/// is in. Requests flow one way through named phases:
///
///     read head → admit (ClientConnection+Forwarding) → forward head and body
///               → relay the response (ResponseRelay) → record → next request
///
/// The work of each phase lives in a type of its own (`Admission`, `BodyReframer`,
/// `ResponseRelay`, `DownstreamHead`, `ErrorResponse`); this class moves bytes between them
/// and the sockets. A failed write to the client never closes the connection from inside the
/// call that wrote: it is noted and the connection closes when the event that caused it ends
/// (`settle`), so no phase finds its exchange gone halfway through.
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
        /// A WebSocket tunnel: bytes flow both ways unchanged until either side closes.
        case tunnel
        case closed
    }

    /// Above this many unsent bytes, reading from the other side pauses.
    static let highWater = 256 << 10
    static let maxReplayBytes = 64 << 10
    static let lingerMillis: Int64 = 2000
    static let maxLingerBytes = 1 << 20
    static let continueBytes: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    let fd: Int32
    // unowned(unsafe): the loop context lives as long as the server, longer than any connection;
    // a checked unowned reference costs a retain and release on every use.
    unowned(unsafe) let ctx: LoopContext
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
    /// A write to the client failed; the connection closes when the current event ends.
    var writeFailed = false
    /// Loop time of the last write progress while output waits (`timeouts.send`).
    var lastWriteProgress: Int64 = 0
    /// In a tunnel, whether the last read each way was large: that direction then splices
    /// (`ClientConnection+Tunnel`). Kept here, not in the tunnel's state, so that a small
    /// message's read checks one flag of the connection before anything else.
    var largeFromClient = false
    var largeToClient = false
    /// TLS on this connection (`tls:` in the policy); nil for plain HTTP.
    let tls: TLSSession?
    /// The verified client certificate's fingerprint, when there is one.
    var clientCertificate: KeyDigest? { tls?.peerSHA256.flatMap { KeyDigest(digest: $0) } }

    init(fd: Int32, ctx: LoopContext, peer: IPAddress, tls: TLSSession? = nil) {
        self.fd = fd
        self.ctx = ctx
        self.peer = peer
        self.tls = tls
        scanner = HeadScanner(maxHeadBytes: ctx.snapshot.policy.limits.maxHeaderBytes)
        deadline = ctx.loop.now + ctx.snapshot.policy.timeouts.headerRead
    }

    var timeouts: Policy.Timeouts { ctx.snapshot.policy.timeouts }

    // MARK: events

    func handle(events: UInt32, loop: EventLoop) {
        if phase == .closed { return }
        defer { settle() }
        if events & Events.writable != 0 { flushOutput() }
        if phase == .closed || writeFailed { return }
        if events & Events.readable != 0 && !readPaused {
            if phase != .tunnel || !spliceFromClient() { readAvailable() }
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

    /// Ends every event: a connection whose client could not be written to closes now.
    func settle() {
        if writeFailed && phase != .closed { abort() }
    }

    private func readAvailable() {
        do {
            switch try Sys.read(fd, ctx.loop.readBuffer) {
            case .done(0):
                clientEOF()
            case .done(let n):
                let bytes = UnsafeRawBufferPointer(rebasing: ctx.loop.readBuffer[0..<n])
                if let t = tls { tlsReceive(t, bytes) } else { onBytes(bytes) }
            case .wouldBlock:
                break
            }
        } catch {
            abort()
        }
    }

    func clientEOF() {
        if phase == .tunnel {
            tunnelEnded(byUpstream: false)
            return
        }
        guard phase == .waiting else {
            abort()
            return
        }
        halfClosed = true
        ex?.keepClient = false
        readPaused = true
        setInterest()
    }

    func onBytes(_ buf: UnsafeRawBufferPointer) {
        switch phase {
        case .lingering:
            lingerBytes += buf.count
            if lingerBytes > Self.maxLingerBytes { abort() }
        case .body where inbuf.isEmpty:
            // The common case: body bytes straight from the loop's read buffer, no copy.
            deadline = ctx.loop.now + timeouts.bodyIdle
            let used = feedBody(buf)
            if phase != .closed && phase != .lingering, used < buf.count {
                inbuf.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[used...]))
                processInput()
            }
        case .closed:
            break
        case .tunnel:
            tunnelFromClient(buf)
        case .waiting:
            // Pipelined input while the answer is on its way: keep it, within a bound.
            inbuf.append(contentsOf: buf)
            if inbuf.count > ctx.snapshot.policy.limits.maxHeaderBytes + Self.highWater { pauseReading(true) }
        case .head, .body:
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
        while !writeFailed {
            switch phase {
            case .head:
                guard !inbuf.isEmpty, let (head, end) = takeHead() else { return }
                inbuf.removeFirst(end)
                scanner.reset()
                begin(head, headBytes: end)
            case .body:
                guard !inbuf.isEmpty else { return }
                deadline = ctx.loop.now + timeouts.bodyIdle
                let pending = inbuf
                inbuf = []
                let used = pending.withUnsafeBytes { feedBody($0) }
                if phase == .closed || phase == .lingering { return }
                if used < pending.count { inbuf = Array(pending[used...]) + inbuf }
                if phase == .body { return }
            case .waiting, .lingering, .tunnel, .closed:
                return
            }
        }
    }

    /// A complete, parsed request head from the front of `inbuf`, or nil when more bytes are
    /// needed (or the head was refused, and answered).
    private func takeHead() -> (RequestHead, Int)? {
        let end: Int?
        do {
            end = try inbuf.withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
        } catch {
            protocolError(HTTPParseError.from(error))
            return nil
        }
        guard let end else { return nil }
        let start = scanner.start
        let limits = ctx.snapshot.policy.limits
        let requestLimits = RequestLimits(maxHeadBytes: limits.maxHeaderBytes, maxFields: limits.maxHeaders)
        do {
            let head = try inbuf.withUnsafeBytes { (raw) throws(HTTPParseError) -> RequestHead in
                try RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[start..<end]), limits: requestLimits)
            }
            return (head, end)
        } catch {
            protocolError(HTTPParseError.from(error))
            return nil
        }
    }

    /// After an exchange: wait for the next request on this connection.
    func nextRequest() {
        phase = .head
        scanner.reset()
        deadline = ctx.loop.now + (inbuf.isEmpty ? timeouts.idle : timeouts.headerRead)
        if !halfClosed { pauseReading(false) }
        if !inbuf.isEmpty { processInput() }
    }

    // MARK: output and closing

    func sendToClient(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { sendToClient(one: $0) }
    }

    func sendToClient(_ parts: WriteParts) {
        if phase == .closed || writeFailed { return }
        if let t = tls {
            do {
                try t.send(parts)
            } catch {
                writeFailed = true
                return
            }
            flushTLSOutput(t)
            return
        }
        sendRaw(parts)
    }

    /// One buffer for the client, without a parts array on the plain path.
    func sendToClient(one part: UnsafeRawBufferPointer) {
        guard tls == nil else {
            sendToClient(WriteParts(part))
            return
        }
        sendRaw(one: part)
    }

    /// One buffer for the socket as it is.
    func sendRaw(one part: UnsafeRawBufferPointer) {
        write { (out) throws(IOError) in try out.send(fd, one: part, canWrite: true) }
    }

    /// Bytes for the socket as they are (ciphertext, when TLS is on).
    func sendRaw(_ parts: WriteParts) {
        write { (out) throws(IOError) in try out.send(fd, parts: parts, canWrite: true) }
    }

    /// Runs one send on the output buffer: a failure is noted for `settle`, bytes kept for later
    /// arm EPOLLOUT and start the send clock.
    func write(_ send: (inout OutputBuffer) throws(IOError) -> Bool) {
        if phase == .closed || writeFailed { return }
        let wasEmpty = out.isEmpty
        do {
            if try !send(&out) {
                // The client's window is full: the send clock starts now.
                if wasEmpty { lastWriteProgress = ctx.loop.now }
                setInterest()
            }
        } catch {
            writeFailed = true
        }
    }

    private func flushOutput() {
        let before = out.count
        do {
            let drained = try out.flush(fd)
            if out.count < before { lastWriteProgress = ctx.loop.now }
            guard drained else { return }
        } catch {
            writeFailed = true
            return
        }
        setInterest()
        if closeWhenFlushed {
            closeWhenFlushed = false
            finishClose()
            return
        }
        // The client took what was waiting: the upstream may send more.
        if let exchange = ex, let u = exchange.upstream, u.readPaused, phase == .waiting || phase == .body || phase == .tunnel {
            u.pauseReading(false)
            if phase != .tunnel { deadline = ctx.loop.now + timeouts.upstreamResponse }
        }
    }

    func closeAfterFlush(linger: Bool) {
        if let t = tls, t.handshakeDone {
            // close_notify: the client can tell our end from a cut connection.
            t.shutdown()
            flushTLSOutput(t)
        }
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
        if phase == .tunnel {
            ctx.metrics.tunnelsOpen -= 1
            ctx.metrics.tunnelsClosed[(ex?.tunnel?.end ?? .client).index] += 1
        }
        phase = .closed
        if let exchange = ex {
            dropUpstream(exchange)
            // Nothing answered yet: logged as nginx does when the client gives up first.
            if exchange.status == 0 { exchange.status = 499 }
            record(exchange)
            ex = nil
        }
        // Unsent bytes go now, a pipe's descriptors with them.
        out = OutputBuffer()
        ctx.remove(self)
        ctx.loop.close(fd)
        ctx.server.connectionClosed(from: peer)
    }

    func pauseReading(_ paused: Bool) {
        if readPaused == paused { return }
        readPaused = paused
        setInterest()
    }

    func setInterest() {
        if phase == .closed { return }
        var interest: UInt32 = readPaused || halfClosed ? 0 : Events.read
        if !out.isEmpty { interest |= Events.write }
        ctx.loop.setInterest(fd, interest)
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
