import KeygateIO
#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive connection to the upstream. It moves bytes; the HTTP state of the exchange
/// it serves lives in its `ClientConnection`.
final class UpstreamConnection: EventHandler {
    let fd: Int32
    unowned let ctx: LoopContext
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

    init(fd: Int32, ctx: LoopContext, connecting: Bool) {
        self.fd = fd
        self.ctx = ctx
        self.connecting = connecting
    }

    static func open(ctx: LoopContext) throws(IOError) -> UpstreamConnection {
        let (fd, inProgress) = try Sockets.connect(ctx.server.upstreamAddress)
        let u = UpstreamConnection(fd: fd, ctx: ctx, connecting: inProgress)
        do {
            try ctx.loop.register(fd, u, interest: inProgress ? Events.write : Events.read)
        } catch {
            Sys.close(fd)
            throw error
        }
        ctx.metrics.upstreamOpen += 1
        return u
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
        let buf = ctx.loop.readBuffer
        do {
            switch try Sys.read(fd, buf) {
            case .done(0):
                client.upstreamEOF(self)
            case .done(let n):
                client.upstreamBytes(self, UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            case .wouldBlock:
                break
            }
        } catch {
            client.upstreamFailed(self, error, wroteNothing: false)
        }
    }

    /// Sends bytes (or queues them while connecting). Returns false on a write error, which
    /// `sendFailure` then describes; the caller decides what follows, so a send never runs the
    /// client's failure handling from inside the client's own call.
    func send(_ parts: [UnsafeRawBufferPointer]) -> Bool {
        let before = bytesWritten
        do {
            for p in parts { bytesWritten += p.count }
            _ = try out.send(fd, parts: parts, canWrite: !connecting)
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
        ctx.metrics.upstreamOpen -= 1
        ctx.loop.close(fd)
    }
}
