/// A parsed, validated request head. Ranges point into `bytes`, a private copy of the head.
public struct RequestHead: Sendable {
    public var bytes: [UInt8]
    public var method: Range<Int>
    /// Origin-form target (path and query); absolute-form is already rewritten.
    public var target: Range<Int>
    public var version: HTTPVersion
    public var fields: [HeaderField]
    public var framing: BodyFraming
    /// Whether the client wants the connection kept after this exchange.
    public var keepAlive: Bool
    public var expectContinue: Bool
    /// Index into `fields` of the Host field, if any.
    public var hostField: Int?
    /// Lowercased field names listed in `Connection` (besides close/keep-alive): not forwarded.
    public var connectionOptions: [Range<Int>]

    public var isHead: Bool { bytes.equalsLowercased(method, "head") }

    /// The path without the query string: the start of `target`, found once by the parser
    /// (every phase of a request reads it).
    public var path: Range<Int>

    /// A WebSocket opening handshake (RFC 6455 §4.1): GET, HTTP/1.1, no body, `Connection`
    /// naming `upgrade` and exactly one `Upgrade: websocket`. Any other upgrade is never
    /// forwarded (its fields are hop-by-hop and removed).
    public var isWebSocketUpgrade: Bool {
        guard !connectionOptions.isEmpty, version == .http11, framing == .none, bytes.equalsLowercased(method, "get") else { return false }
        guard connectionOptions.contains(where: { bytes.equalsLowercased($0, "upgrade") }) else { return false }
        var found = false
        for f in fields where bytes.equalsLowercased(f.name, "upgrade") {
            if found || !bytes.equalsLowercased(f.value, "websocket") { return false }
            found = true
        }
        return found
    }

    /// The query string without `?`, or an empty range.
    public var query: Range<Int> {
        let p = path
        return p.upperBound < target.upperBound ? (p.upperBound + 1)..<target.upperBound : target.upperBound..<target.upperBound
    }

    public func methodString() -> String { bytes.string(method) }
    public func pathString() -> String { bytes.string(path) }

    /// Index of the first field whose name equals lowercase `name`.
    public func firstField(_ name: StaticString) -> Int? {
        bytes.withUnsafeBufferPointer { p in
            fields.firstIndex { p.equalsLowercased($0.name, name) }
        }
    }

    /// Whether `name` (a field name range) is listed as an option in `Connection`.
    public func isConnectionOption(_ name: Range<Int>) -> Bool {
        for option in connectionOptions where option.count == name.count {
            var j = option.lowerBound
            var same = true
            for i in name {
                if lower(bytes[i]) != lower(bytes[j]) { same = false; break }
                j += 1
            }
            if same { return true }
        }
        return false
    }
}
