import Dispatch
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateHTTP
import KeygateIO
import Synchronization

/// The admin listener (`admin_listen`, never the public one): /healthz, /readyz, /metrics.
/// It runs on a loop of its own so that gathering metrics from the worker loops never waits
/// on itself.
final class AdminServer: EventHandler {
    let endpoint: Policy.Endpoint
    unowned let server: Server
    let loop: EventLoop
    let fd: Int32
    /// Scrapers and probes: a few at a time.
    static let maxConnections = 64
    private let acceptor: Acceptor

    init(server: Server, endpoint: Policy.Endpoint) throws {
        self.server = server
        self.endpoint = endpoint
        guard let address = SocketAddress(host: endpoint.host, port: endpoint.port) else {
            throw ServeError("admin_listen \(endpoint) is not a numeric address")
        }
        loop = try EventLoop(index: 999, readBufferSize: 16384)
        fd = try Sockets.listen(address, backlog: 64)
        let log = server.log
        acceptor = Acceptor(fd: fd, cap: Self.maxConnections, name: "admin_listen: ", warn: { log.warning($0) })
        probe = UpstreamProbe(address: server.upstreamAddress, loop: loop)
        do {
            try loop.registerFromOutside(fd, self, interest: Events.readable)
        } catch {
            Sys.close(fd)
            throw ServeError("admin_listen \(endpoint): \(error)")
        }
        loop.addTickHandler { [self] loop in tick(loop) }
        loop.start()
    }

    func handle(events: UInt32, loop: EventLoop) {
        acceptor.accept(loop: loop, handler: self, open: connections.count) { c, _ in
            let conn = AdminConnection(fd: c, admin: self)
            do {
                try loop.register(c, conn, interest: Events.read)
            } catch {
                Sys.close(c)
                return false
            }
            conn.deadline = loop.now + 5000
            connections.append(conn)
            return true
        }
    }

    var connections: [AdminConnection] = []
    /// Readiness includes "the upstream accepts connections": a non-blocking connect on this
    /// loop every two seconds, so nothing ever waits on it.
    private let probe: UpstreamProbe

    private func tick(_ loop: EventLoop) {
        probe.tick(now: loop.now)
        sweep(&connections, now: loop.now)
    }

    func respond(path: String) -> (Int, String, String) {
        switch path {
        case "/healthz":
            return (200, "application/json", "{\"status\":\"ok\"}\n")
        case "/readyz":
            // Ready = the upstream accepts connections and the gate is not draining. Read without
            // the control queue: a reload in progress on the control queue never delays the probe.
            let up = probe.reachable
            let draining = server.isDraining
            var ready = up && !draining
            var cluster = ""
            if server.fleetSync != nil {
                // With `on_redis_down: deny` a gate without Redis refuses keyed requests, so it
                // is not ready; with `local` it serves, enforcing alone.
                switch server.snapshot.fleet.mode {
                case .shared: cluster = ",\"cluster\":\"up\""
                case .downLocal: cluster = ",\"cluster\":\"down\",\"on_redis_down\":\"local\""
                case .downDeny:
                    cluster = ",\"cluster\":\"down\",\"on_redis_down\":\"deny\""
                    ready = false
                case .alone: break
                }
            }
            let body =
                "{\"ready\":\(ready),\"keys\":\(server.snapshot.keyCount),\"upstream\":\(up ? "\"reachable\"" : "\"unreachable\""),\"draining\":\(draining)\(cluster)}\n"
            return (ready ? 200 : 503, "application/json", body)
        case "/metrics":
            return (200, "text/plain; version=0.0.4", Metrics.render(server: server))
        default:
            return (404, "application/json", "{\"error\":\"not_found\"}\n")
        }
    }
}

/// A connection that serves one request and must be done by a deadline.
protocol OneShotConnection: AnyObject {
    var closed: Bool { get }
    var deadline: Int64 { get }
    func close()
}

/// Forgets closed connections and closes those past their deadline.
func sweep<C: OneShotConnection>(_ connections: inout [C], now: Int64) {
    connections.removeAll { c in
        if c.closed { return true }
        if now > c.deadline {
            c.close()
            return true
        }
        return false
    }
}

/// One admin request per connection: read a head, answer, close.
final class AdminConnection: EventHandler, OneShotConnection {
    let fd: Int32
    unowned let admin: AdminServer
    var input: [UInt8] = []
    var scanner = HeadScanner(maxHeadBytes: 8192)
    var deadline: Int64 = 0
    var closed = false
    var out = OutputBuffer()

    init(fd: Int32, admin: AdminServer) {
        self.fd = fd
        self.admin = admin
    }

    func handle(events: UInt32, loop: EventLoop) {
        if closed { return }
        if !out.isEmpty {
            if (try? out.flush(fd)) != false { close() }
            return
        }
        guard case .done(let n)? = try? Sys.read(fd, loop.readBuffer), n > 0 else {
            close()
            return
        }
        input.append(contentsOf: UnsafeRawBufferPointer(rebasing: loop.readBuffer[0..<n]))
        let end: Int?
        do {
            end = try input.withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
        } catch {
            // A head too large or malformed gets its status (431, 400), as on the public listener.
            let status = HTTPParseError.from(error).status
            answer((status == 0 ? 400 : status, "application/json", "{\"error\":\"bad_request\"}\n"), headOnly: false)
            return
        }
        guard let end else { return }
        let start = scanner.start
        let response: (Int, String, String)
        var headOnly = false
        do {
            let head = try input.withUnsafeBytes { (raw) throws(HTTPParseError) -> RequestHead in
                try RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
            }
            headOnly = head.isHead
            if head.bytes.equalsLowercased(head.method, "get") || headOnly {
                response = admin.respond(path: head.pathString())
            } else {
                response = (405, "application/json", "{\"error\":\"method_not_allowed\"}\n")
            }
        } catch {
            let status = HTTPParseError.from(error).status
            response = (status == 0 ? 400 : status, "application/json", "{\"error\":\"bad_request\"}\n")
        }
        answer(response, headOnly: headOnly)
    }

    /// Writes the one answer this connection gives, then closes it once sent.
    private func answer(_ response: (Int, String, String), headOnly: Bool) {
        let body = Array(response.2.utf8)
        var bytes = Array(
            "HTTP/1.1 \(response.0) \(ErrorResponse.reasonPhrase(response.0) == "Error" ? "OK" : ErrorResponse.reasonPhrase(response.0))\r\nContent-Type: \(response.1)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                .utf8)
        if !headOnly { bytes.append(contentsOf: body) }
        let done = (try? bytes.withUnsafeBytes { (raw) throws(IOError) -> Bool in try out.send(fd, one: raw, canWrite: true) }) ?? true
        if done {
            close()
        } else {
            admin.loop.setInterest(fd, Events.write)
        }
    }

    func close() {
        if closed { return }
        closed = true
        admin.loop.close(fd)
    }
}

/// Whether the upstream accepts TCP connections: one non-blocking connect at a time on the
/// admin loop, judged when the socket becomes writable or after a second.
final class UpstreamProbe: EventHandler {
    static let intervalMillis: Int64 = 2000
    static let timeoutMillis: Int64 = 1000
    let address: SocketAddress
    unowned let loop: EventLoop
    private let state = Atomic<Bool>(false)
    private var fd: Int32 = -1
    private var startedAt: Int64 = 0
    private var nextAt: Int64 = 0

    var reachable: Bool { state.load(ordering: .relaxed) }

    init(address: SocketAddress, loop: EventLoop) {
        self.address = address
        self.loop = loop
    }

    /// Runs on the admin loop.
    func tick(now: Int64) {
        if fd >= 0 {
            if now - startedAt >= Self.timeoutMillis { finish(false) }
            return
        }
        guard now >= nextAt else { return }
        nextAt = now + Self.intervalMillis
        guard let (c, inProgress) = try? Sockets.connect(address) else {
            state.store(false, ordering: .relaxed)
            return
        }
        if !inProgress {
            Sys.close(c)
            state.store(true, ordering: .relaxed)
            return
        }
        do {
            try loop.register(c, self, interest: Events.write)
        } catch {
            Sys.close(c)
            state.store(false, ordering: .relaxed)
            return
        }
        fd = c
        startedAt = now
    }

    func handle(events: UInt32, loop: EventLoop) {
        guard fd >= 0 else { return }
        finish(Sys.socketError(fd) == 0 && events & Events.error == 0)
    }

    private func finish(_ ok: Bool) {
        state.store(ok, ordering: .relaxed)
        loop.close(fd)
        fd = -1
    }
}
