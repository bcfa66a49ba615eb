import Dispatch
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateHTTP
import KeygateIO

/// The web console's listener (`console.listen`, never the proxy's): an event loop of its own
/// reads each request whole and writes its answer; the work between (the key store, password
/// hashes) runs on a queue of its own, so neither the proxy's loops nor this one ever wait on it.
final class ConsoleServer: EventHandler, @unchecked Sendable {
    static let maxBody = 1 << 20
    static let deadlineMillis: Int64 = 15_000
    /// Requests handed to the work queue and not yet answered. Beyond this many, new ones are
    /// answered 503 at once: a flood of sign-ins (each a memory-hard hash) cannot queue
    /// unbounded work or memory.
    static let maxInFlight = 32
    private var inFlight = 0

    let endpoint: Policy.Endpoint
    let loop: EventLoop
    let fd: Int32
    let api: ConsoleAPI
    /// People's browsers (a handful of connections each) and scripts.
    static let maxConnections = 256
    private let acceptor: Acceptor
    let work = DispatchQueue(label: "keygate.console", attributes: .concurrent)
    var connections: [ConsoleConnection] = []
    /// The gate's certificates when `console.tls` is on; replaced with them on a reload.
    var tls: TLSServerContext?
    var scheme: String { tls == nil ? "http" : "https" }

    init(server: Server, settings: Policy.Console) throws {
        endpoint = settings.listen
        tls = settings.tls ? server.tlsContext : nil
        guard let address = SocketAddress(host: endpoint.host, port: endpoint.port) else {
            throw ServeError("console.listen \(endpoint) is not a numeric address")
        }
        api = ConsoleAPI(server: server, settings: settings)
        loop = try EventLoop(index: 998, readBufferSize: 65536)
        fd = try Sockets.listen(address, backlog: 128)
        let log = server.log
        acceptor = Acceptor(fd: fd, cap: Self.maxConnections, name: "console.listen: ", warn: { log.warning($0) })
        do {
            try loop.registerFromOutside(fd, self, interest: Events.readable)
        } catch {
            Sys.close(fd)
            throw ServeError("console.listen \(endpoint): \(error)")
        }
        loop.addTickHandler { [self] loop in sweep(&connections, now: loop.now) }
        loop.start()
    }

    func handle(events: UInt32, loop: EventLoop) {
        acceptor.accept(loop: loop, handler: self, open: connections.count) { c, addr in
            let peer = IPAddress(sockaddr: addr).map { "\($0)" } ?? "-"
            let conn = ConsoleConnection(fd: c, console: self, peer: peer, tls: tls?.session())
            do {
                try loop.register(c, conn, interest: Events.read)
            } catch {
                Sys.close(c)
                return false
            }
            conn.deadline = loop.now + Self.deadlineMillis
            connections.append(conn)
            return true
        }
    }

    /// Runs a request off the loop and answers it on the loop.
    func dispatch(_ req: ConsoleRequest, to conn: ConsoleConnection) {
        if inFlight >= Self.maxInFlight {
            var busy = ConsoleAPI.error(503, "busy", "the console is busy; try again in a moment")
            busy.headers.append(("Retry-After", "1"))
            conn.answer(busy, headOnly: false)
            return
        }
        inFlight += 1
        let api = self.api
        let loop = self.loop
        work.async {
            let response = api.handle(req)
            let deliver: @Sendable () -> Void = {
                loop.execute { [self] in
                    inFlight -= 1
                    conn.answer(response, headOnly: req.method == "HEAD")
                }
            }
            if response.delayMillis > 0 {
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(response.delayMillis), execute: deliver)
            } else {
                deliver()
            }
        }
    }
}

/// One console request per connection: read the head and the body, answer, close.
final class ConsoleConnection: EventHandler, OneShotConnection, @unchecked Sendable {
    let fd: Int32
    unowned let console: ConsoleServer
    let peer: String
    var input: [UInt8] = []
    var scanner = HeadScanner(maxHeadBytes: 16384)
    var head: RequestHead?
    var bodyStart = 0
    var bodyLength = 0
    var deadline: Int64 = 0
    var closed = false
    var answered = false
    var out = OutputBuffer()
    let tls: TLSSession?

    init(fd: Int32, console: ConsoleServer, peer: String, tls: TLSSession?) {
        self.fd = fd
        self.console = console
        self.peer = peer
        self.tls = tls
    }

    func handle(events: UInt32, loop: EventLoop) {
        if closed { return }
        if answered || !out.isEmpty {
            let flushed = (try? out.flush(fd)) ?? true
            if answered {
                if flushed { close() }
                return
            }
            // A TLS handshake's records went out: back to reading.
            if !flushed { return }
            loop.setInterest(fd, Events.read)
        }
        let result: IOResult
        do {
            result = try Sys.read(fd, loop.readBuffer)
        } catch {
            close()
            return
        }
        guard case .done(let n) = result else { return }
        if n == 0 {
            close()
            return
        }
        if let t = tls {
            var plain: [UInt8] = []
            var scratch = [UInt8](repeating: 0, count: 16384)
            let received = scratch.withUnsafeMutableBytes { s in
                (try? t.receive(UnsafeRawBufferPointer(rebasing: loop.readBuffer[0..<n]), scratch: s) { plain.append(contentsOf: $0) }) != nil
            }
            if !received {
                sendTLSOutput(t)  // the alert, if any
                close()
                return
            }
            if !sendTLSOutput(t) { return }
            if plain.isEmpty { return }
            input.append(contentsOf: plain)
        } else {
            input.append(contentsOf: UnsafeRawBufferPointer(rebasing: loop.readBuffer[0..<n]))
        }
        if head == nil {
            let end: Int?
            do {
                end = try input.withUnsafeBytes { (raw) throws(HTTPParseError) -> Int? in try scanner.scan(raw) }
            } catch {
                fail(HTTPParseError.from(error).status, "the request is malformed")
                return
            }
            guard let end else { return }
            let start = scanner.start
            do {
                let h = try input.withUnsafeBytes { (raw) throws(HTTPParseError) -> RequestHead in
                    try RequestParser.parse(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                }
                switch h.framing {
                case .none: bodyLength = 0
                case .contentLength(let n) where n <= UInt64(ConsoleServer.maxBody): bodyLength = Int(n)
                case .contentLength: return fail(413, "the request body is too large")
                default: return fail(411, "send the body with Content-Length")
                }
                head = h
                bodyStart = end
            } catch {
                fail(HTTPParseError.from(error).status, "the request is malformed")
                return
            }
        }
        guard let h = head, input.count - bodyStart >= bodyLength else { return }
        loop.setInterest(fd, 0)
        var headers: [String: String] = [:]
        for f in h.fields {
            let name = h.bytes.string(f.name).lowercased()
            if headers[name] == nil { headers[name] = h.bytes.string(f.value) }
        }
        var query: [String: String] = [:]
        h.bytes.withUnsafeBufferPointer { p in
            QueryCredential.forEachParameter(p, h.query) { name, value in
                let k = String(decoding: QueryCredential.decode(p, name), as: UTF8.self)
                if query[k] == nil { query[k] = String(decoding: QueryCredential.decode(p, value), as: UTF8.self) }
            }
        }
        let req = ConsoleRequest(
            method: h.methodString().uppercased(), path: h.pathString(), query: query, headers: headers,
            body: Array(input[bodyStart..<(bodyStart + bodyLength)]), peer: peer)
        console.dispatch(req, to: self)
    }

    private func fail(_ status: Int, _ message: String) {
        answer(ConsoleAPI.error(status == 0 ? 400 : status, "bad_request", message), headOnly: false)
    }

    /// On the console loop.
    func answer(_ r: ConsoleResponse, headOnly: Bool) {
        if closed || answered { return }
        answered = true
        var text = "HTTP/1.1 \(r.status) \(ErrorResponse.reasonPhrase(r.status) == "Error" ? Self.phrase(r.status) : ErrorResponse.reasonPhrase(r.status))\r\n"
        text += "Content-Type: \(r.contentType)\r\nContent-Length: \(r.body.count)\r\nConnection: close\r\n"
        text += ConsoleAssets.securityHeaders
        for (k, v) in r.headers { text += "\(k): \(v)\r\n" }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if !headOnly { bytes.append(contentsOf: r.body) }
        if let t = tls {
            let sealed = bytes.withUnsafeBytes { raw in (try? t.send([raw])) != nil }
            t.shutdown()
            if !sealed {
                close()
                return
            }
            if sendTLSOutput(t) { close() }
            return
        }
        let done = (try? bytes.withUnsafeBytes { (raw) throws(IOError) -> Bool in try out.send(fd, one: raw, canWrite: true) }) ?? true
        if done {
            close()
        } else {
            console.loop.setInterest(fd, Events.write)
        }
    }

    /// Moves TLS records to the socket. Returns true when all went out; otherwise the rest
    /// waits for the socket to be writable (and the connection closes once it has).
    @discardableResult
    private func sendTLSOutput(_ t: TLSSession) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        var done = true
        while true {
            let n = chunk.withUnsafeMutableBytes { t.takeOutput(into: $0) }
            if n == 0 { break }
            done = (try? chunk.withUnsafeBytes { (raw) throws(IOError) -> Bool in try out.send(fd, one: UnsafeRawBufferPointer(rebasing: raw[0..<n]), canWrite: true) }) ?? false
        }
        if !done && !closed { console.loop.setInterest(fd, answered ? Events.write : Events.read | Events.write) }
        return done
    }

    static func phrase(_ s: Int) -> String {
        switch s {
        case 200: return "OK"
        case 201: return "Created"
        case 302: return "Found"
        case 411: return "Length Required"
        default: return "Error"
        }
    }

    func close() {
        if closed { return }
        closed = true
        console.loop.close(fd)
    }
}
