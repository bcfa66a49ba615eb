import COpenSSL
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateHTTP
import KeygateIO

/// A tiny upstream for `keygate demo`: answers every request with JSON describing what it
/// received (method, path, headers, body size and SHA-256), so a user sees exactly what the
/// gate forwards. `GET /events` streams server-sent events, and a WebSocket handshake on any
/// path opens an echo, so the demo shows streams and tunnels through the gate too. A thread per
/// connection: a demo, not a server.
public final class EchoUpstream: @unchecked Sendable {
    let fd: Int32
    public let port: UInt16

    public init(host: String = "127.0.0.1", port: UInt16) throws {
        guard let address = SocketAddress(host: host, port: port) else { throw ServeError("bad demo upstream address") }
        fd = try Sockets.listen(address, backlog: 128)
        self.port = Sockets.localPort(fd)
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        DetachedThread.start { [self] in acceptLoop() }
    }

    private func acceptLoop() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 {
                if errno == EINTR { continue }
                return
            }
            DetachedThread.start { [self] in serve(c) }
        }
    }

    private func serve(_ c: Int32) {
        defer { close(c) }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        func fill() -> Bool {
            let n = chunk.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
            if n <= 0 { return false }
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }
        while true {
            var scanner = HeadScanner()
            var end: Int? = nil
            while end == nil {
                end = try? buffer.withUnsafeBytes { try scanner.scan($0) }
                if end == nil && !fill() { return }
            }
            guard let headEnd = end,
                let head = try? buffer.withUnsafeBytes({ try RequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[scanner.start..<headEnd])) })
            else { return }
            buffer.removeFirst(headEnd)
            var body: [UInt8] = []
            switch head.framing {
            case .contentLength(let n):
                while buffer.count < Int(n) { if !fill() { return } }
                body = Array(buffer[0..<Int(n)])
                buffer.removeFirst(Int(n))
            case .chunked:
                var decoder = ChunkedDecoder()
                while !decoder.isDone {
                    let used = (try? buffer.withUnsafeBytes { raw in try decoder.decode(raw) { body.append(contentsOf: $0) } }) ?? -1
                    if used < 0 { return }
                    buffer.removeFirst(used)
                    if !decoder.isDone && !fill() { return }
                }
            default: break
            }
            var headers: [String: String] = [:]
            for f in head.fields { headers[head.bytes.string(f.name)] = head.bytes.string(f.value) }
            let field = { (name: StaticString) in head.firstField(name).map { head.bytes.string(head.fields[$0].value) } }
            if field("upgrade")?.lowercased() == "websocket", let nonce = field("sec-websocket-key") {
                Self.serveWebSocket(c, nonce: nonce, pending: buffer)
                return
            }
            if head.methodString() == "GET", head.pathString() == "/events" {
                guard Self.serveEvents(c) else { return }
                if !head.keepAlive { return }
                continue
            }
            let digest = KeyDigest(hashing: String(decoding: body, as: UTF8.self)).stored
            let object: JSONValue = [
                "method": JSONValue(head.methodString()), "path": JSONValue(head.bytes.string(head.target)), "headers": .object(headers.mapValues(JSONValue.string)),
                "body_bytes": JSONValue(body.count), "body_sha256": JSONValue(String(digest.dropFirst(7))),
            ]
            let json = object.encoded(pretty: true) ?? []
            var response = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(json.count + 1)\r\n\r\n".utf8)
            response.append(contentsOf: json)
            response.append(0x0A)
            guard Self.send(c, response) else { return }
            if !head.keepAlive { return }
        }
    }

    static func send(_ c: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { System.writeAll(c, $0).error == 0 }
    }

    /// Five server-sent events, one a second, as chunks of a chunked answer.
    static func serveEvents(_ c: Int32) -> Bool {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        guard send(c, Array(head.utf8)) else { return false }
        for tick in 1...5 {
            if tick > 1 { sleep(1) }
            let event = "id: \(tick)\ndata: {\"tick\": \(tick), \"of\": 5}\n\n"
            guard send(c, Array((String(event.utf8.count, radix: 16) + "\r\n" + event + "\r\n").utf8)) else { return false }
        }
        return send(c, Array("0\r\n\r\n".utf8))
    }

    /// The RFC 6455 handshake, a greeting, then every data frame echoed back (unmasked, as a
    /// server sends), pings answered, and a close answered with a close.
    static func serveWebSocket(_ c: Int32, nonce: String, pending: [UInt8]) {
        let accept = Array((nonce + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: 20)
        _ = accept.withUnsafeBufferPointer { SHA1($0.baseAddress, $0.count, &digest) }
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(Data(digest).base64EncodedString())\r\n\r\n"
        guard send(c, Array(head.utf8)),
            send(c, WebSocketFrames.serverFrame(first: 0x81, payload: Array("keygate demo: every frame you send comes back; revoking the key closes this tunnel".utf8)))
        else { return }
        var buffer = pending
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            while let (first, payload, used) = parseFrame(buffer) {
                buffer.removeFirst(used)
                switch first & 0x0F {
                case 0x8:
                    _ = send(c, WebSocketFrames.serverFrame(first: 0x88, payload: Array(payload.prefix(125))))
                    return
                case 0x9:
                    guard send(c, WebSocketFrames.serverFrame(first: 0x8A, payload: payload)) else { return }
                case 0xA: break
                default:
                    guard send(c, WebSocketFrames.serverFrame(first: first, payload: payload)) else { return }
                }
            }
            let n = chunk.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// The first whole frame in `b`: its first byte, its unmasked payload and its length in `b`.
    static func parseFrame(_ b: [UInt8]) -> (UInt8, [UInt8], Int)? {
        guard let (length, size) = b.withUnsafeBytes({ WebSocketFrames.wholeHeader($0, at: 0) }) else { return nil }
        // A frame this big is not a demo's: it ends the echo as a close would.
        guard length <= 1 << 24 else { return (0x88, [], b.count) }
        let end = size + Int(length)
        guard b.count >= end else { return nil }
        var payload = Array(b[size..<end])
        if b[1] & 0x80 != 0 {
            let mask = Array(b[(size - 4)..<size])
            for i in payload.indices { payload[i] ^= mask[i & 3] }
        }
        return (b[0], payload, end)
    }
}
