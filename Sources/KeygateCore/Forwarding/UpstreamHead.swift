import KeygateHTTP

/// Builds the request head sent upstream: keygate's own framing, hop-by-hop and forged fields
/// removed, identity and forwarding fields set (HTTP.md rules 6, 8 and 9).
public enum UpstreamHead {
    /// Why a head cannot be forwarded even though it parsed.
    public static func refusal(_ head: RequestHead, snapshot s: Snapshot) -> String? {
        if s.policy.escapedSlashes == .reject, head.bytes.withUnsafeBufferPointer({ PathNormalizer.hasEscapedSlash($0, head.path) }) {
            return "the path holds an encoded / or \\ (%2F, %5C), which the upstream may decode differently"
        }
        for option in head.connectionOptions {
            if head.bytes.hasFieldPrefix(option, s.identityPrefixLower) { return "Connection names an identity field" }
            for name in s.credentialHeaders where head.bytes.withUnsafeBufferPointer({ $0.equalsFieldName(option, bytes: name) }) {
                return "Connection names the credential field"
            }
            if s.policy.bearer && head.bytes.equalsLowercased(option, "authorization") { return "Connection names the credential field" }
        }
        return nil
    }

    static let hopByHop: [StaticString] = [
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
        "proxy-authorization", "proxy-authenticate", "content-length", "expect", "x-request-id",
    ]
    static let forwarding: [StaticString] = ["x-forwarded-for", "x-real-ip", "forwarded", "x-forwarded-proto", "x-forwarded-host"]

    /// Appends the upstream head for `head` to `out`.
    /// `upgrade`: the request is a WebSocket handshake the gate lets through, so `Connection:
    /// Upgrade` and `Upgrade: websocket` are sent on (for this case alone).
    public static func append(
        _ head: RequestHead, decision d: Decision, snapshot s: Snapshot, requestID: [UInt8], peer: IPAddress, upgrade: Bool = false,
        https: Bool = false, to out: inout [UInt8]
    ) {
        let b = head.bytes
        out.append(b, head.method)
        out.append(0x20)
        if let path = d.forwardPath {
            // The normal form the rules matched.
            out.append(contentsOf: path)
        } else {
            out.append(b, head.path)
        }
        appendQuery(head, s, to: &out)
        out.append(" HTTP/1.1\r\n" as StaticString)
        if head.hostField == nil {
            // HTTP/1.0 may leave Host out; HTTP/1.1, which the upstream is spoken to in, may not.
            out.append("Host: " as StaticString)
            out.append(contentsOf: s.policy.upstream.description.utf8)
            out.append("\r\n" as StaticString)
        }
        // Nearly always one X-Forwarded-For line: held inline, further ones in an array.
        var forwardedFor: Range<Int>? = nil
        var moreForwardedFor: [Range<Int>] = []
        var forwardedProto: Range<Int>? = nil
        b.withUnsafeBufferPointer { p in
            for f in head.fields {
                // Every credential field, not only the one that authenticated: a public route,
                // or a key sent twice, must not hand a secret to the app.
                if Gate.credentialValue(p, f, s) != nil { continue }
                let n = f.name
                // Names the gate sets or reads are matched with `_` read as `-`, so that no
                // look-alike reaches an app that folds the two.
                if hopByHop.contains(where: { p.equalsFieldName(n, $0) }) { continue }
                if b.hasFieldPrefix(n, s.identityPrefixLower) { continue }
                if forwarding.contains(where: { p.equalsFieldName(n, $0) }) {
                    // Only a trusted proxy's chain is believed, under its own name; everyone
                    // else's is dropped, and so is a look-alike.
                    if p[n].contains(UInt8(ascii: "_")) { continue }
                    if d.viaTrustedProxy {
                        if p.equalsLowercased(n, "x-forwarded-for") {
                            if forwardedFor == nil { forwardedFor = f.value } else { moreForwardedFor.append(f.value) }
                            continue
                        }
                        if p.equalsLowercased(n, "x-forwarded-proto") {
                            forwardedProto = f.value
                            continue
                        }
                    } else {
                        continue
                    }
                }
                if !head.connectionOptions.isEmpty && head.isConnectionOption(n) { continue }
                out.appendFieldLine(p, f)
            }
        }
        switch head.framing {
        case .contentLength(let n):
            out.append("Content-Length: " as StaticString)
            JSONBytes.appendInt(n, to: &out)
            out.append("\r\n" as StaticString)
        case .chunked:
            out.append("Transfer-Encoding: chunked\r\n" as StaticString)
        case .none, .untilClose:
            // A body-less request that the client framed as empty keeps that framing.
            if !bodylessMethod(head) { out.append("Content-Length: 0\r\n" as StaticString) }
        }
        if let key = d.key {
            if key.identityPrefix == s.policy.identityPrefix {
                out.append(contentsOf: key.identityHeaders)  // built once per key
            } else {
                field(s.identityPrefix, "Key-Id", key.idBytes, &out)
                field(s.identityPrefix, "Key-Name", key.nameBytes, &out)
                field(s.identityPrefix, "Owner", key.ownerBytes, &out)
                field(s.identityPrefix, "Scopes", key.scopesBytes, &out)
            }
        }
        if d.country != 0 {
            // Two letters, written in place (an array of them was an allocation per request).
            out.append(contentsOf: s.identityPrefix)
            out.append("Country: " as StaticString)
            CountryCode.append(d.country, to: &out)
            out.append("\r\n" as StaticString)
        }
        if upgrade { out.append("Connection: Upgrade\r\nUpgrade: websocket\r\n" as StaticString) }
        out.append("X-Request-Id: " as StaticString)
        out.append(contentsOf: requestID)
        out.append("\r\nX-Forwarded-For: " as StaticString)
        func hop(_ r: Range<Int>) {
            out.append(b, r)
            out.append(", " as StaticString)
        }
        if let r = forwardedFor { hop(r) }
        for r in moreForwardedFor { hop(r) }
        peer.append(to: &out)
        out.append("\r\nX-Forwarded-Proto: " as StaticString)
        if let r = forwardedProto {
            out.append(b, r)
        } else if https {
            out.append("https" as StaticString)
        } else {
            out.append("http" as StaticString)
        }
        out.append("\r\n\r\n" as StaticString)
    }

    /// The query exactly as sent, less every parameter that may carry a key.
    static func appendQuery(_ head: RequestHead, _ s: Snapshot, to out: inout [UInt8]) {
        let q = head.query
        guard head.path.upperBound < head.target.upperBound else { return }
        if s.credentialQuery.isEmpty {
            out.append(head.bytes, head.path.upperBound..<head.target.upperBound)
            return
        }
        var first = true
        head.bytes.withUnsafeBufferPointer { p in
            QueryCredential.forEachParameter(p, q) { name, value in
                if QueryCredential.isCredential(p, name, s) { return }
                out.append(first ? UInt8(ascii: "?") : UInt8(ascii: "&"))
                first = false
                out.append(contentsOf: p[name.lowerBound..<value.upperBound])
            }
        }
    }

    static func bodylessMethod(_ head: RequestHead) -> Bool {
        let m = head.method
        return head.bytes.equalsLowercased(m, "get") || head.bytes.equalsLowercased(m, "head") || head.bytes.equalsLowercased(m, "delete")
            || head.bytes.equalsLowercased(m, "options") || head.bytes.equalsLowercased(m, "trace")
    }

    static func field(_ prefix: [UInt8], _ name: StaticString, _ value: [UInt8], _ out: inout [UInt8]) {
        out.append(contentsOf: prefix)
        out.append(name)
        out.append(": " as StaticString)
        out.append(contentsOf: value)
        out.append("\r\n" as StaticString)
    }

    /// A client's X-Request-Id is kept only if it matches [A-Za-z0-9._-]{1,64}.
    public static func clientRequestID(_ head: RequestHead) -> [UInt8]? {
        guard let i = head.firstField("x-request-id") else { return nil }
        let r = head.fields[i].value
        guard (1...64).contains(r.count) else { return nil }
        for j in r {
            let c = head.bytes[j]
            let ok = Base62.isDigit(c) || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
            if !ok { return nil }
        }
        return Array(head.bytes[r])
    }
}
