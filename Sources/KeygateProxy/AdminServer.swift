import Dispatch
import Foundation
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
    let upstreamReachable = Atomic<Bool>(false)
    private var probe: DispatchSourceTimer?

    init(server: Server, endpoint: Policy.Endpoint) throws {
        self.server = server
        self.endpoint = endpoint
        guard let address = SocketAddress(host: endpoint.host, port: endpoint.port) else {
            throw ServeError("admin_listen \(endpoint) is not a numeric address")
        }
        loop = try EventLoop(index: 999, readBufferSize: 16384)
        fd = try Sockets.listen(address, backlog: 64)
        loop.queue.sync { try? loop.register(fd, self, interest: Events.readable) }
        loop.start()
        startProbe()
    }

    func handle(events: UInt32, loop: EventLoop) {
        var addr = sockaddr_storage()
        while let c = try? Sys.accept(fd, &addr) {
            let conn = AdminConnection(fd: c, admin: self)
            try? loop.register(c, conn, interest: Events.read)
            conn.deadline = loop.now + 5000
            connections.append(conn)
        }
    }

    var connections: [AdminConnection] = []

    /// Readiness includes "the upstream accepts connections", probed off the loops.
    private func startProbe() {
        let t = DispatchSource.makeTimerSource(queue: server.control)
        t.schedule(deadline: .now(), repeating: .seconds(2))
        t.setEventHandler { [self] in
            upstreamReachable.store(Self.canConnect(server.upstreamAddress), ordering: .relaxed)
        }
        t.resume()
        probe = t
        loop.tickHandlers.append { [self] loop in
            connections.removeAll { c in
                if c.closed { return true }
                if loop.now > c.deadline {
                    c.close()
                    return true
                }
                return false
            }
        }
    }

    static func canConnect(_ address: SocketAddress) -> Bool {
        guard let (fd, inProgress) = try? Sockets.connect(address) else { return false }
        defer { Sys.close(fd) }
        if !inProgress { return true }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, 1000) == 1 else { return false }
        return Sys.socketError(fd) == 0
    }

    func respond(path: String) -> (Int, String, String) {
        switch path {
        case "/healthz":
            return (200, "application/json", "{\"status\":\"ok\"}\n")
        case "/readyz":
            let s = server.snapshot
            let up = upstreamReachable.load(ordering: .relaxed)
            let body = "{\"ready\":\(up),\"keys\":\(s.keyCount),\"upstream\":\(up ? "\"reachable\"" : "\"unreachable\"")}\n"
            return (up ? 200 : 503, "application/json", body)
        case "/metrics":
            return (200, "text/plain; version=0.0.4", Metrics.render(server: server))
        default:
            return (404, "application/json", "{\"error\":\"not_found\"}\n")
        }
    }
}

/// One admin request per connection: read a head, answer, close.
final class AdminConnection: EventHandler {
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
            close()
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
        let body = Array(response.2.utf8)
        var bytes = Array(
            "HTTP/1.1 \(response.0) \(ErrorResponse.reasonPhrase(response.0) == "Error" ? "OK" : ErrorResponse.reasonPhrase(response.0))\r\nContent-Type: \(response.1)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                .utf8)
        if !headOnly { bytes.append(contentsOf: body) }
        let done = (try? bytes.withUnsafeBytes { (raw) throws(IOError) -> Bool in try out.send(fd, parts: [raw], canWrite: true) }) ?? true
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
