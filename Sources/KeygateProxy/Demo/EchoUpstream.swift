import FoundationEssentials
import Glibc
import KeygateCore
import KeygateHTTP
import KeygateIO

/// A tiny upstream for `keygate demo`: answers every request with JSON describing what it
/// received (method, path, headers, body size and SHA-256), so a user sees exactly what the
/// gate forwards. A thread per connection: a demo, not a server.
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
            let digest = KeyDigest(hashing: String(decoding: body, as: UTF8.self)).stored
            let object: JSONValue = [
                "method": JSONValue(head.methodString()), "path": JSONValue(head.bytes.string(head.target)), "headers": .object(headers.mapValues(JSONValue.string)),
                "body_bytes": JSONValue(body.count), "body_sha256": JSONValue(String(digest.dropFirst(7))),
            ]
            let json = object.encoded(pretty: true) ?? []
            var response = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(json.count + 1)\r\n\r\n".utf8)
            response.append(contentsOf: json)
            response.append(0x0A)
            var off = 0
            while off < response.count {
                let n = response[off...].withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
                if n <= 0 { return }
                off += n
            }
            if !head.keepAlive { return }
        }
    }
}
