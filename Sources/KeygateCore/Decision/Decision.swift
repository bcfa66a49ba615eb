import KeygateHTTP
import Synchronization

/// The outcome of the policy check for one request head.
public struct Decision: Sendable {
    /// nil = allowed.
    public var denial: DenyReason?
    public var key: KeyEntry?
    /// The address the rules were applied to (the peer, or from a trusted proxy's chain).
    public var client: IPAddress
    /// Packed country code (`CountryCode.pack`), 0 when unknown.
    public var country: UInt16
    /// Index of the field that carried the key (removed before forwarding).
    public var credentialField: Int?
    /// Whether the peer is a trusted proxy (its forwarding chain is kept).
    public var viaTrustedProxy: Bool
    /// The route is public: forwarded without a key. A valid key presented anyway only adds
    /// its identity headers; it is not rate limited here and never refused.
    public var isPublic = false
    /// The normalised path, when it differs from the one the client sent: what the rules
    /// matched is what the upstream receives.
    public var forwardPath: [UInt8]?

    public var allowed: Bool { denial == nil }
}

/// The policy check as a pure function of a request head, the peer address, a snapshot and
/// the time: identify client → global access → credential → authenticate → authorize.
public enum Gate {
    /// `clientCertificate`: the fingerprint of a verified TLS client certificate, when the
    /// connection has one; bound to a key, it authenticates as that key without a header.
    public static func decide(_ head: RequestHead, peer: IPAddress, snapshot s: Snapshot, nowMillis: Int64, clientCertificate: KeyDigest? = nil) -> Decision {
        var d = Decision(denial: nil, key: nil, client: peer, country: 0, credentialField: nil, viaTrustedProxy: false)
        head.bytes.withUnsafeBufferPointer { p in
            decide(head, p, &d, s, nowMillis, clientCertificate)
        }
        return d
    }

    static func decide(_ head: RequestHead, _ p: UnsafeBufferPointer<UInt8>, _ d: inout Decision, _ s: Snapshot, _ now: Int64, _ cert: KeyDigest?) {
        // 1. Identify the client.
        if let trusted = s.trustedProxies, trusted.contains(d.client) {
            d.viaTrustedProxy = true
            d.client = ClientAddress.fromForwardedChain(head, p, peer: d.client, trusted: trusted)
        }
        // 2. Global access: addresses, then countries.
        if let allow = s.allowIPs, !allow.contains(d.client) {
            d.denial = .ip_not_allowed
            return
        }
        if let geo = s.geoip {
            d.country = geo.country(d.client)
            if d.country == 0 {
                if !s.policy.access.countries.unknownAllowed {
                    d.denial = .country_not_allowed
                    return
                }
            } else if s.denyCountries.contains(d.country) || (!s.allowCountries.isEmpty && !s.allowCountries.contains(d.country)) {
                d.denial = .country_not_allowed
                return
            }
        }
        // Paths are matched, and forwarded, in normal form; a path already in normal form (the
        // common case) is read where it lies, without a copy.
        let method = UnsafeBufferPointer(rebasing: p[head.method])
        let pathRange = head.path
        if !PathNormalizer.isCanonical(p, pathRange) {
            let n = PathNormalizer.normalize(p, pathRange, escapedSlashes: s.policy.escapedSlashes)
            d.forwardPath = n
            n.withUnsafeBufferPointer { routesAndKey(head, p, &d, s, now, cert, method, $0) }
        } else {
            routesAndKey(head, p, &d, s, now, cert, method, UnsafeBufferPointer(rebasing: p[pathRange]))
        }
    }

    /// Public routes need no key; every other route goes through `authenticate`.
    static func routesAndKey(
        _ head: RequestHead, _ p: UnsafeBufferPointer<UInt8>, _ d: inout Decision, _ s: Snapshot, _ now: Int64, _ cert: KeyDigest?,
        _ method: UnsafeBufferPointer<UInt8>, _ path: UnsafeBufferPointer<UInt8>
    ) {
        if !s.policy.publicRoutes.isEmpty && s.policy.publicRoutes.contains(where: { $0.matches(method: method, path: path) }) {
            // No key needed. One that is presented and valid lends its identity; anything else
            // about it is ignored (the credential is removed before forwarding either way).
            d.isPublic = true
            authenticate(head, p, &d, s, now, cert, method, path)
            if d.denial != nil {
                d.denial = nil
                d.key = nil
            }
            return
        }
        authenticate(head, p, &d, s, now, cert, method, path)
    }

    /// Credential → checksum → lookup → the key's state, addresses, countries and scopes.
    static func authenticate(
        _ head: RequestHead, _ p: UnsafeBufferPointer<UInt8>, _ d: inout Decision, _ s: Snapshot, _ now: Int64, _ cert: KeyDigest?,
        _ method: UnsafeBufferPointer<UInt8>, _ path: UnsafeBufferPointer<UInt8>
    ) {
        // 3. Extract the credential.
        var credential: Range<Int>? = nil
        for (i, f) in head.fields.enumerated() {
            guard let v = credentialValue(p, f, s) else { continue }
            if credential != nil {
                // Two credentials are ambiguous: which one would the app believe?
                d.denial = .malformed_key
                return
            }
            credential = v
            d.credentialField = i
        }
        var fromQuery: [UInt8]? = nil
        if !s.credentialQuery.isEmpty {
            var ambiguous = false
            QueryCredential.forEach(head, p, s) { value in
                if credential != nil || fromQuery != nil { ambiguous = true }
                fromQuery = value
            }
            if ambiguous {
                d.denial = .malformed_key
                return
            }
        }
        if let q = fromQuery {
            guard !q.isEmpty else {
                d.denial = .missing_key
                return
            }
            q.withUnsafeBytes { authenticateKey($0, &d, s) }
        } else if credential == nil, let cert, let key = s.keysByCertificate[cert] {
            // A verified client certificate bound to a key: that key, without a header.
            d.key = key
        } else {
            guard let cred = credential, !cred.isEmpty else {
                d.denial = .missing_key
                return
            }
            authenticateKey(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: p[cred])), &d, s)
        }
        guard d.denial == nil, let key = d.key else { return }
        authorize(key, &d, now, method, path)
    }

    /// 4. Authenticate: checksum first, then one SHA-256 and a lookup.
    static func authenticateKey(_ raw: UnsafeRawBufferPointer, _ d: inout Decision, _ s: Snapshot) {
        if KeyFormat.classify(raw, prefix: s.prefixBytes) == .malformed {
            d.denial = .malformed_key
            return
        }
        guard let key = s.keys[KeyDigest(hashing: raw)] else {
            d.denial = .unknown_key
            return
        }
        d.key = key
    }

    /// Whether a key that was valid has since ended: revoked or disabled in this copy of the
    /// store or by a change another host pushed (a pushed delete is `unknown_key`), or expired.
    /// Requests are checked with it, and so are the tunnels they opened, on every tick.
    @inline(__always)
    public static func endedKeyDenial(_ key: KeyEntry, now: Int64) -> DenyReason? {
        switch key.record.status {
        case .revoked: return .revoked
        case .disabled: return .disabled
        case .active: break
        }
        switch key.pushed.load(ordering: .relaxed) {
        case PushedStatus.none.rawValue: break
        case PushedStatus.disabled.rawValue: return .disabled
        case PushedStatus.revoked.rawValue: return .revoked
        default: return .unknown_key
        }
        if let e = key.expiresMillis, now >= e { return .expired }
        return nil
    }

    /// 5. Authorize: the key's state, addresses, countries and scopes.
    static func authorize(_ key: KeyEntry, _ d: inout Decision, _ now: Int64, _ method: UnsafeBufferPointer<UInt8>, _ path: UnsafeBufferPointer<UInt8>) {
        if let ended = endedKeyDenial(key, now: now) {
            d.denial = ended
            return
        }
        if let nb = key.notBeforeMillis, now < nb {
            d.denial = .not_yet_valid
            return
        }
        if let allow = key.allowIPs, !allow.contains(d.client) {
            d.denial = .ip_not_allowed
            return
        }
        if !key.denyCountries.isEmpty || !key.allowCountries.isEmpty {
            if key.denyCountries.contains(d.country) || (!key.allowCountries.isEmpty && !key.allowCountries.contains(d.country)) {
                d.denial = .country_not_allowed
                return
            }
        }
        if let routes = key.routes {
            if !routes.contains(where: { $0.matches(method: method, path: path) }) {
                d.denial = .scope_denied
                return
            }
        }
    }

    /// The credential a field carries, if it is one of the policy's credential fields: a
    /// configured header, or `Authorization: Bearer …` when bearer is on. The same test decides
    /// what is authenticated and what is removed before forwarding, so no credential the gate
    /// reads can ever reach the upstream.
    @inline(__always)
    public static func credentialValue(_ p: UnsafeBufferPointer<UInt8>, _ f: HeaderField, _ s: Snapshot) -> Range<Int>? {
        if s.policy.bearer, f.name.count == 13, p.equalsLowercased(f.name, "authorization") {
            let v = f.value
            // The scheme, then spaces or tabs: an app that splits on any whitespace would read
            // `Bearer<TAB>key` as a bearer token too, so the gate must not pass it on.
            guard v.count > 7, p.equalsLowercased(v.lowerBound..<(v.lowerBound + 6), "bearer"), p[v.lowerBound + 6] == 0x20 || p[v.lowerBound + 6] == 0x09
            else { return nil }
            var start = v.lowerBound + 7
            while start < v.upperBound, p[start] == 0x20 || p[start] == 0x09 { start += 1 }
            return start..<v.upperBound
        }
        // Matched with `_` read as `-`: apps that see fields as `HTTP_X_API_KEY` read
        // `x_api_key` as `x-api-key`.
        for name in s.credentialHeaders where p.equalsFieldName(f.name, bytes: name) { return f.value }
        return nil
    }
}

/// Finding the real client behind trusted proxies, read where the header values lie (no
/// strings: every request through a trusted proxy takes this path).
public enum ClientAddress {
    /// The right-most address of the forwarding chain that is not a trusted proxy. The chain is
    /// `X-Forwarded-For`, or else `Forwarded: for=`. The peer when the chain is absent or
    /// unreadable (never an address a client merely claims).
    static func fromForwardedChain(_ head: RequestHead, _ p: UnsafeBufferPointer<UInt8>, peer: IPAddress, trusted: CIDRSet) -> IPAddress {
        var xff = Chain()
        var forwarded = Chain()
        var bad = false
        for f in head.fields {
            if p.equalsLowercased(f.name, "x-forwarded-for") {
                forEachListElement(p, f.value) { item in
                    if let a = address(p, item) { xff.add(a, trusted) } else { bad = true }
                }
            } else if p.equalsLowercased(f.name, "forwarded") {
                forEachPart(p, f.value, separator: UInt8(ascii: ",")) { element in
                    forEachPart(p, element, separator: UInt8(ascii: ";")) { pair in
                        // `for=` with a name and a value; other parameters are not ours.
                        guard let eq = p[pair].firstIndex(of: UInt8(ascii: "=")), eq > pair.lowerBound, eq < pair.upperBound - 1,
                              p.equalsLowercased(p.trimmingOWS(pair.lowerBound..<eq), "for") else { return }
                        if let a = forwardedNode(p, p.trimmingOWS((eq + 1)..<pair.upperBound)) { forwarded.add(a, trusted) } else { bad = true }
                    }
                }
            }
        }
        if bad { return peer }
        return (xff.leftmost != nil ? xff : forwarded).client ?? peer
    }

    /// A chain read left to right: what a walk from its right end would stop at.
    struct Chain {
        var leftmost: IPAddress?
        var rightmostUntrusted: IPAddress?

        mutating func add(_ a: IPAddress, _ trusted: CIDRSet) {
            if leftmost == nil { leftmost = a }
            if !trusted.contains(a) { rightmostUntrusted = a }
        }

        /// The right-most untrusted address; the left-most when every one is trusted.
        var client: IPAddress? { rightmostUntrusted ?? leftmost }
    }

    /// A `for=` node (RFC 7239): `192.0.2.1`, `"192.0.2.1:80"` or `"[2001:db8::1]:443"`.
    static func forwardedNode(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> IPAddress? {
        var v = r
        let quote = UInt8(ascii: "\"")
        if v.count >= 2, p[v.lowerBound] == quote, p[v.upperBound - 1] == quote { v = (v.lowerBound + 1)..<(v.upperBound - 1) }
        if !v.isEmpty, p[v.lowerBound] == UInt8(ascii: "[") {
            guard let close = p[v].firstIndex(of: UInt8(ascii: "]")) else { return nil }
            return address(p, (v.lowerBound + 1)..<close)
        }
        if let colon = p[v].firstIndex(of: UInt8(ascii: ":")) { v = v.lowerBound..<colon }
        return address(p, v)
    }

    static func address(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> IPAddress? {
        IPAddress(bytes: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: p[r])))
    }
}

/// Keys in the query string (`credentials.query`), for browsers' WebSockets.
public enum QueryCredential {
    /// Calls `body` with the (percent-decoded) value of every credential parameter.
    static func forEach(_ head: RequestHead, _ p: UnsafeBufferPointer<UInt8>, _ s: Snapshot, _ body: ([UInt8]) -> Void) {
        forEachParameter(p, head.query) { name, value in
            guard isCredential(p, name, s) else { return }
            body(decode(p, value))
        }
    }

    /// Whether the parameter named by `name` carries the key. Names are compared decoded, as
    /// an app reads them: `api%5Fkey` is `api_key`, so it can neither slip a second key past
    /// the gate nor reach the app with one.
    public static func isCredential(_ p: UnsafeBufferPointer<UInt8>, _ name: Range<Int>, _ s: Snapshot) -> Bool {
        for want in s.credentialQuery where want.count <= name.count {
            var j = 0
            var i = name.lowerBound
            while i < name.upperBound, j < want.count {
                let (byte, width) = decodedByte(p, i, name.upperBound)
                if byte != want[j] { break }
                i += width
                j += 1
            }
            if i == name.upperBound, j == want.count { return true }
        }
        return false
    }

    /// The byte that starts at `i` once decoded, and how many bytes it took.
    static func decodedByte(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (UInt8, Int) {
        if p[i] == UInt8(ascii: "%"), i + 2 < end, let v = PathNormalizer.hexPair(p[i + 1], p[i + 2]) { return (v, 3) }
        return (p[i] == UInt8(ascii: "+") ? 0x20 : p[i], 1)
    }

    /// Splits `a=1&b=2` into name and value ranges (the whole parameter when it has no `=`).
    public static func forEachParameter(_ p: UnsafeBufferPointer<UInt8>, _ query: Range<Int>, _ body: (Range<Int>, Range<Int>) -> Void) {
        var start = query.lowerBound
        while start < query.upperBound {
            var end = start
            while end < query.upperBound, p[end] != UInt8(ascii: "&") { end += 1 }
            var eq = start
            while eq < end, p[eq] != UInt8(ascii: "=") { eq += 1 }
            body(start..<eq, (eq < end ? eq + 1 : end)..<end)
            start = end + 1
        }
    }

    /// A form-encoded name or value, decoded: `%XX` escapes and `+` for a space; a malformed
    /// escape is kept as it is.
    public static func decode(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(r.count)
        var i = r.lowerBound
        while i < r.upperBound {
            let (byte, width) = decodedByte(p, i, r.upperBound)
            out.append(byte)
            i += width
        }
        return out
    }
}
