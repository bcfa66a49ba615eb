import KeygateHTTP

/// Builds the response head sent to the client from the upstream's: keygate's own framing,
/// hop-by-hop fields and those named in `Connection` removed, `RateLimit-*` and `X-Request-Id`
/// added (HTTP.md rules 6 and 8). Pure, like `UpstreamHead`.
public enum DownstreamHead {
    /// How the answer continues after the head.
    public struct Plan: Equatable, Sendable {
        /// Whether the client connection stays open after this answer.
        public var keepAlive: Bool
        /// Whether keygate wraps the body in its own chunks.
        public var chunkToClient: Bool

        public init(keepAlive: Bool, chunkToClient: Bool) {
            self.keepAlive = keepAlive
            self.chunkToClient = chunkToClient
        }
    }

    static let hopByHop: [StaticString] = [
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer", "proxy-authenticate",
    ]

    /// Appends the client's head for upstream response `r` to `request`. `keepAlive` is what the
    /// connection allows (the client asked for it, no drain, the request body fully read…);
    /// the answer may still have to close (an HTTP/1.0 client reading to the close).
    public static func append(
        _ r: ResponseHead, request: RequestHead, keepAlive: Bool, rateHeaders: [UInt8], requestID: [UInt8], to out: inout [UInt8]
    ) -> Plan {
        r.bytes.withUnsafeBufferPointer {
            append(r, bytes: $0, requestWasHead: request.isHead, requestVersion: request.version, keepAlive: keepAlive, rateHeaders: rateHeaders,
                   requestID: requestID, to: &out)
        }
    }

    /// As above, for a head parsed in place (`ResponseParser.parseInPlace`): its ranges point into `p`.
    public static func append(
        _ r: ResponseHead, bytes p: UnsafeBufferPointer<UInt8>, requestWasHead: Bool, requestVersion: HTTPVersion, keepAlive: Bool,
        rateHeaders: [UInt8], requestID: [UInt8], to out: inout [UInt8]
    ) -> Plan {
        var keep = keepAlive
        var chunk = false
        out.reserveCapacity(out.count + p.count + 128)
        out.append("HTTP/1.1 " as StaticString)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: p[9..<r.statusLine.upperBound]))
        out.append("\r\n" as StaticString)
        // Answers to HEAD, and 304s, describe a body they do not carry: their length stays.
        let keepLength = requestWasHead || r.status == 304
        let hasRequestID = appendEndToEndFields(r, p, keepLength: keepLength, to: &out)
        switch r.framing {
        case .contentLength(let n):
            if !keepLength {
                out.append("Content-Length: " as StaticString)
                JSONBytes.appendInt(n, to: &out)
                out.append("\r\n" as StaticString)
            }
        case .chunked, .untilClose:
            if requestVersion == .http11 {
                chunk = true
                out.append("Transfer-Encoding: chunked\r\n" as StaticString)
            } else {
                keep = false  // an HTTP/1.0 client reads to the close
            }
        case .none:
            if !keepLength && r.status != 204 && r.status >= 200 {
                out.append("Content-Length: 0\r\n" as StaticString)
            }
        }
        out.append(contentsOf: rateHeaders)
        if !hasRequestID {
            out.append("X-Request-Id: " as StaticString)
            out.append(contentsOf: requestID)
            out.append("\r\n" as StaticString)
        }
        if !keep {
            out.append("Connection: close\r\n" as StaticString)
        } else if requestVersion == .http10 {
            out.append("Connection: keep-alive\r\n" as StaticString)
        }
        out.append("\r\n" as StaticString)
        return Plan(keepAlive: keep, chunkToClient: chunk)
    }

    /// Whether a 101 answer switches to WebSocket (`Upgrade: websocket`, `Connection: upgrade`).
    public static func acceptsWebSocket(_ r: ResponseHead, bytes p: UnsafeBufferPointer<UInt8>) -> Bool {
        var upgrade = false
        for f in r.fields where p.equalsLowercased(f.name, "upgrade") {
            if !p.equalsLowercased(f.value, "websocket") { return false }
            upgrade = true
        }
        return upgrade && r.connectionOptions.contains { p.equalsLowercased($0, "upgrade") }
    }

    /// The client's head for a 101 switch to WebSocket: the upstream's fields (handshake
    /// fields included) less hop-by-hop ones, then keygate's `Connection`/`Upgrade`.
    public static func appendSwitch(_ r: ResponseHead, bytes p: UnsafeBufferPointer<UInt8>, requestID: [UInt8], to out: inout [UInt8]) {
        out.append("HTTP/1.1 " as StaticString)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: p[9..<r.statusLine.upperBound]))
        out.append("\r\n" as StaticString)
        let hasRequestID = appendEndToEndFields(r, p, keepLength: false, to: &out)
        out.append("Connection: Upgrade\r\nUpgrade: websocket\r\n" as StaticString)
        if !hasRequestID {
            out.append("X-Request-Id: " as StaticString)
            out.append(contentsOf: requestID)
            out.append("\r\n" as StaticString)
        }
        out.append("\r\n" as StaticString)
    }

    /// Copies the fields that are not hop-by-hop (nor named in `Connection`); the upstream's
    /// `Content-Length` only when `keepLength`. Returns whether it sent an `X-Request-Id`.
    static func appendEndToEndFields(_ r: ResponseHead, _ p: UnsafeBufferPointer<UInt8>, keepLength: Bool, to out: inout [UInt8]) -> Bool {
        var hasRequestID = false
        for f in r.fields {
            let n = f.name
            if hopByHop.contains(where: { p.equalsLowercased(n, $0) }) { continue }
            if p.equalsLowercased(n, "content-length") && !keepLength { continue }
            if !r.connectionOptions.isEmpty && r.connectionOptions.contains(where: { sameName(p, $0, n) }) { continue }
            if p.equalsLowercased(n, "x-request-id") { hasRequestID = true }
            out.appendFieldLine(p, f)
        }
        return hasRequestID
    }

    static func sameName(_ p: UnsafeBufferPointer<UInt8>, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var j = b.lowerBound
        for i in a {
            var x = p[i]
            var y = p[j]
            if x >= 0x41 && x <= 0x5A { x |= 0x20 }
            if y >= 0x41 && y <= 0x5A { y |= 0x20 }
            if x != y { return false }
            j += 1
        }
        return true
    }
}
