import Dispatch
import KeygateCore
import KeygateIO
#if canImport(Glibc)
import Glibc
#endif

/// Accepts client connections for one loop. Every loop registers the same listening socket
/// with EPOLLEXCLUSIVE, so the kernel wakes one loop per new connection and no connection is
/// handed between threads.
final class Listener: EventHandler, @unchecked Sendable {
    let fd: Int32
    // unowned(unsafe): the loop context lives as long as the server, longer than any connection;
    // a checked unowned reference costs a retain and release on every use.
    unowned(unsafe) let ctx: LoopContext
    private let pause = AcceptPause()

    init(fd: Int32, ctx: LoopContext) {
        self.fd = fd
        self.ctx = ctx
    }

    func handle(events: UInt32, loop: EventLoop) {
        if ctx.draining || pause.paused { return }
        for _ in 0..<64 {
            var addr = sockaddr_storage()
            let conn: Int32
            do {
                guard let c = try Sys.accept(fd, &addr) else { return }
                conn = c
            } catch {
                let ctx = ctx
                pause.pause(
                    after: error, fd: fd, handler: self, interest: Events.readable | Events.exclusive, loop: loop, name: "",
                    warn: { ctx.server.log.warning($0) }, resume: { !ctx.draining })
                return
            }
            let peer = IPAddress(sockaddr: addr) ?? IPAddress(v4: 0)
            if !ctx.server.admitConnection(from: peer) {
                // Over max_connections (or the address's share): refuse this one cleanly;
                // existing ones are unharmed.
                Sys.close(conn)
                continue
            }
            Sys.setInt(conn, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            var session: TLSSession? = nil
            if let tls = ctx.tls {
                guard let s = tls.session() else {
                    Sys.close(conn)
                    ctx.server.connectionClosed(from: peer)
                    continue
                }
                session = s
            }
            let client = ClientConnection(fd: conn, ctx: ctx, peer: peer, tls: session)
            do {
                try loop.register(conn, client, interest: Events.read)
            } catch {
                Sys.close(conn)
                ctx.server.connectionClosed(from: peer)
                continue
            }
            ctx.add(client)
            // The first bytes (a request, a ClientHello) usually arrive with the handshake's
            // last ACK: read them now rather than on the next wake-up. Nothing there costs one
            // read that says so.
            client.handle(events: Events.readable, loop: loop)
        }
    }
}
