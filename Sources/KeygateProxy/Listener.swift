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
    private let acceptor: Acceptor

    init(fd: Int32, ctx: LoopContext) {
        self.fd = fd
        self.ctx = ctx
        acceptor = Acceptor(
            fd: fd, interest: Events.readable | Events.exclusive, perWake: 64, name: "",
            warn: { [unowned(unsafe) ctx] in ctx.server.log.warning($0) }, resume: { [unowned(unsafe) ctx] in !ctx.draining })
    }

    func handle(events: UInt32, loop: EventLoop) {
        if ctx.draining { return }
        acceptor.accept(loop: loop, handler: self) { conn, addr in
            let peer = IPAddress(sockaddr: addr) ?? IPAddress(v4: 0)
            if !ctx.server.admitConnection(from: peer) {
                // Over max_connections (or the address's share): refuse this one cleanly;
                // existing ones are unharmed.
                Sys.close(conn)
                return false
            }
            Sys.setInt(conn, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let home = ctx.server.place(from: ctx)
            if home === ctx {
                ctx.open(conn, peer: peer)
            } else {
                home.loop.execute { home.open(conn, peer: peer) }
            }
            return true
        }
    }
}

extension LoopContext {
    /// Sets up an accepted client connection on this loop (already counted in `placed`).
    func open(_ conn: Int32, peer: IPAddress) {
        if draining {
            refuse(conn, peer: peer)
            return
        }
        var session: TLSSession? = nil
        if let tls {
            guard let s = tls.session() else {
                refuse(conn, peer: peer)
                return
            }
            session = s
        }
        let client = ClientConnection(fd: conn, ctx: self, peer: peer, tls: session)
        do {
            try loop.register(conn, client, interest: Events.read)
        } catch {
            refuse(conn, peer: peer)
            return
        }
        add(client)
        // The first bytes (a request, a ClientHello) usually arrive with the handshake's
        // last ACK: read them now rather than on the next wake-up. Nothing there costs one
        // read that says so.
        client.handle(events: Events.readable, loop: loop)
    }

    private func refuse(_ conn: Int32, peer: IPAddress) {
        Sys.close(conn)
        server.connectionClosed(from: peer)
        placed.subtract(1, ordering: .relaxed)
    }
}
