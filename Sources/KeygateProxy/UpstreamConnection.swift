import KeygateHTTP
import KeygateIO
#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive connection to the upstream. It moves bytes; the HTTP state of the exchange
/// it serves lives in its `ClientConnection`.
final class UpstreamConnection: EventHandler {
    let fd: Int32
    // unowned(unsafe): the loop context lives as long as the server, longer than any connection;
    // a checked unowned reference costs a retain and release on every use.
    unowned(unsafe) let ctx: LoopContext
    var connecting: Bool
    var out = OutputBuffer()
    /// The client whose request this connection is carrying; nil while pooled.
    var client: ClientConnection?
    var idleSince: Int64 = 0
    var closed = false
    var readPaused = false
    /// Whether this connection already served a request (so a failure may just be staleness).
    var reused = false
    var bytesWritten = 0
    /// TLS to the upstream (`upstream: https://…`); nil for plain HTTP.
    let tls: TLSSession?
    /// Plaintext handed over before the TLS handshake finished; encrypted once it has.
    private var beforeHandshake: [UInt8] = []

    init(fd: Int32, ctx: LoopContext, connecting: Bool, tls: TLSSession?) {
        self.fd = fd
        self.ctx = ctx
        self.connecting = connecting
        self.tls = tls
    }

    static func open(ctx: LoopContext) throws(IOError) -> UpstreamConnection {
        var session: TLSSession? = nil
        if let client = ctx.server.upstreamTLS {
            guard let s = client.session() else { throw IOError("TLS session", ENOMEM) }
            session = s
        }
        let (fd, inProgress) = try Sockets.connect(ctx.server.upstreamAddress)
        let u = UpstreamConnection(fd: fd, ctx: ctx, connecting: inProgress, tls: session)
        do {
            try ctx.loop.register(fd, u, interest: inProgress ? Events.write : Events.read)
        } catch {
            Sys.close(fd)
            throw error
        }
        ctx.metrics.upstreamOpen += 1
        if !inProgress, let t = session {
            do {
                try u.startTLS(t)
            } catch {
                u.close()
                throw IOError("TLS: \(error)", 0)
            }
        }
        return u
    }

    /// Sends the ClientHello (or what the handshake needs next).
    private func startTLS(_ t: TLSSession) throws(TLSError) {
        _ = try t.continueHandshake()
        try flushTLS(t)
    }

    /// Moves what OpenSSL produced to the socket.
    private func flushTLS(_ t: TLSSession) throws(TLSError) {
        let scratch = ctx.loop.outputScratch
        while true {
            let n = t.takeOutput(into: scratch)
            if n == 0 { break }
            do {
                _ = try out.send(fd, one: UnsafeRawBufferPointer(rebasing: scratch[0..<n]), canWrite: !connecting)
            } catch {
                throw TLSError("\(error)")
            }
        }
        updateInterest()
    }

    func parkInPool(now: Int64) {
        client = nil
        reused = true
        idleSince = now
        readPaused = false
        bytesWritten = 0
        ctx.loop.setInterest(fd, Events.read)
    }

    func handle(events: UInt32, loop: EventLoop) {
        if closed { return }
        guard let client else {
            // Pooled and idle: any event means the upstream closed it (or sent garbage).
            ctx.removeFromPool(self)
            close()
            return
        }
        if connecting {
            guard events & (Events.writable | Events.error) != 0 else { return }
            let err = Sys.socketError(fd)
            connecting = false
            if err != 0 {
                client.upstreamFailed(self, IOError("connect", err), wroteNothing: true)
                return
            }
            updateInterest()
            if let t = tls {
                do {
                    try startTLS(t)
                } catch {
                    tlsFailed(client, error)
                    return
                }
            }
            client.upstreamConnected(self)
            if closed { return }
        }
        if events & Events.writable != 0 {
            do {
                if try out.flush(fd) {
                    updateInterest()
                    client.upstreamDrained(self)
                }
            } catch {
                client.upstreamFailed(self, error, wroteNothing: false)
                return
            }
        }
        if closed { return }
        if events & (Events.readable | Events.error | Events.hangup) != 0 && !readPaused {
            readAvailable(client)
        }
    }

    private func readAvailable(_ client: ClientConnection) {
        if tls == nil, client.phase == .tunnel, client.spliceFromUpstream(self) { return }
        let buf = ctx.loop.readBuffer
        do {
            switch try Sys.read(fd, buf) {
            case .done(0):
                client.upstreamEOF(self)
            case .done(let n):
                let bytes = UnsafeRawBufferPointer(rebasing: buf[0..<n])
                if let t = tls { tlsReceive(t, client, bytes) } else { client.upstreamBytes(self, bytes) }
            case .wouldBlock:
                break
            }
        } catch {
            client.upstreamFailed(self, error, wroteNothing: false)
        }
    }

    /// Ciphertext from the upstream: the handshake goes on, or plaintext goes to the client.
    private func tlsReceive(_ t: TLSSession, _ client: ClientConnection, _ cipher: UnsafeRawBufferPointer) {
        do throws(TLSError) {
            let wasDone = t.handshakeDone
            // The read buffer's bytes are OpenSSL's once fed: it takes the plaintext.
            _ = try t.receive(cipher, scratch: ctx.loop.readBuffer) { plain in
                if !closed, self.client === client { client.upstreamBytes(self, plain) }
            }
            if !wasDone && t.handshakeDone && !beforeHandshake.isEmpty {
                let pending = beforeHandshake
                beforeHandshake = []
                var failure: TLSError?
                pending.withUnsafeBytes { raw in
                    do throws(TLSError) { try t.send(CollectionOfOne(raw)) } catch { failure = error }
                }
                if let failure { throw failure }
            }
            if !closed { try flushTLS(t) }
        } catch {
            tlsFailed(client, error)
        }
    }

    private func tlsFailed(_ client: ClientConnection, _ error: TLSError) {
        ctx.server.log.warning("upstream TLS: \(error)")
        client.upstreamFailed(self, IOError("TLS: \(error)", 0), wroteNothing: !(tls?.handshakeDone ?? false))
    }

    /// Sends bytes (or queues them while connecting). Returns false on a write error, which
    /// `sendFailure` then describes; the caller decides what follows, so a send never runs the
    /// client's failure handling from inside the client's own call.
    func send(_ parts: WriteParts) -> Bool {
        let before = bytesWritten
        bytesWritten += parts.byteCount
        if let t = tls {
            if !t.handshakeDone {
                for p in parts { beforeHandshake.append(contentsOf: p) }
                return true
            }
            do {
                try t.send(parts)
                try flushTLS(t)
                return true
            } catch {
                sendFailure = (IOError("TLS: \(error)", 0), before == 0)
                return false
            }
        }
        return writePlain(before: before) { (out, fd, canWrite) throws(IOError) in try out.send(fd, parts: parts, canWrite: canWrite) }
    }

    /// One buffer of a tunnel, without a parts array on the plain path.
    func send(one part: UnsafeRawBufferPointer) -> Bool {
        guard tls == nil else { return send(WriteParts(part)) }
        let before = bytesWritten
        bytesWritten += part.count
        return writePlain(before: before) { (out, fd, canWrite) throws(IOError) in try out.send(fd, one: part, canWrite: canWrite) }
    }

    /// Bytes a tunnel spliced into `pipe` for this (plain) connection.
    func send(piped pipe: SplicePipe, count: Int) -> Bool {
        let before = bytesWritten
        bytesWritten += count
        return writePlain(before: before) { (out, fd, _) throws(IOError) in try out.send(fd, piped: pipe, count: count, pool: ctx.pipes) }
    }

    /// Runs one plain send (queued while connecting); a failure is kept in `sendFailure`.
    private func writePlain(before: Int, _ send: (inout OutputBuffer, Int32, Bool) throws(IOError) -> Bool) -> Bool {
        do {
            _ = try send(&out, fd, !connecting)
            updateInterest()
            return true
        } catch {
            sendFailure = (error, before == 0)
            return false
        }
    }

    /// The last failed send, and whether nothing had been written on this connection before it.
    var sendFailure: (error: IOError, wroteNothing: Bool)?

    func pauseReading(_ paused: Bool) {
        readPaused = paused
        updateInterest()
    }

    func updateInterest() {
        if closed { return }
        var interest: UInt32 = readPaused ? 0 : Events.read
        if connecting || !out.isEmpty { interest |= Events.write }
        ctx.loop.setInterest(fd, interest)
    }

    func close() {
        if closed { return }
        closed = true
        client = nil
        out = OutputBuffer()
        ctx.metrics.upstreamOpen -= 1
        ctx.loop.close(fd)
    }
}
