import KeygateCore
import KeygateHTTP

/// The key the forwarding check's snapshot knows (a legacy key: any printable text of 16 or more
/// characters), so seeds can carry it in a field, as a bearer token or in the query.
let fuzzKey = "FuzzSecret0123456789"

/// Keys in `x-api-key`, as a bearer token and in `api_key`; two public routes, so that requests
/// without the key are forwarded too. One snapshot per `escaped_slashes` mode, each with the
/// peer untrusted and trusted as a proxy.
let forwardingSnapshots: [Snapshot] = ["reject", "unescape_and_forward", "keep"].flatMap { mode in
    ["", "trusted_proxies: [\"203.0.113.0/24\"]\n"].map { trust in
        let yaml = """
            upstream: "http://127.0.0.1:9"
            credentials: {headers: [x-api-key], bearer: true, query: [api_key]}
            public_routes: ["GET /pub/**", "POST /pub/**"]
            paths: {escaped_slashes: \(mode)}
            \(trust)
            """
        let policy = try! PolicyLoader.parse(yaml, file: "/nonexistent/keygate-fuzz/keygate.yaml", displayName: "keygate.yaml")
        var record = KeyRecord(id: "FUZZKEY1", name: "fuzz", hash: KeyDigest(hashing: fuzzKey).stored, createdAt: "2026-01-01T00:00:00Z")
        record.owner = "fuzz"
        return Snapshot(policy: policy, records: [record], geoip: nil)
    }
}

/// For every request the gate would forward, the head it sends upstream must read back, with
/// the gate's own parser, as the same method and body framing, and must carry no credential (no
/// key field, no bearer token, no query parameter whose decoded name is a key parameter), no
/// identity field but those the gate wrote, no forwarding field from an untrusted peer and no
/// look-alike of one from any peer, one X-Forwarded-For ending with the peer, and one framing
/// field at most; field names are compared as apps that fold `_` into `-` read them. Its path
/// must be in normal form.
/// `pick` chooses the snapshot.
func fuzzForwardedHead(_ head: RequestHead, pick: UInt64) {
    let s = forwardingSnapshots[Int(pick % UInt64(forwardingSnapshots.count))]
    let peer = IPAddress(v4: 0xCB00_7107)  // 203.0.113.7
    var decision = Gate.decide(head, peer: peer, snapshot: s, nowMillis: 1_800_000_000_000)
    guard case .forward = Admission.admit(head, decision: &decision, snapshot: s, nowNanos: 0, wallMillis: 1_800_000_000_000) else { return }
    let upgrade = head.isWebSocketUpgrade
    var out: [UInt8] = []
    UpstreamHead.append(head, decision: decision, snapshot: s, requestID: Array("fuzz".utf8), peer: peer, upgrade: upgrade, to: &out)

    func fail(_ why: String) -> Never {
        fatalError("\(why)\nforwarded: \(String(decoding: out, as: UTF8.self).debugDescription)")
    }
    var again = wideScanner()
    let forwarded: RequestHead
    do {
        guard let fend = try out.withUnsafeBytes({ try again.scan($0) }), fend == out.count else {
            fail("the forwarded head does not end where the gate's head ends")
        }
        forwarded = try out.withUnsafeBytes {
            try RequestParser.parse($0, limits: RequestLimits(maxHeadBytes: 1 << 20, maxFields: 1 << 16, maxLineBytes: 1 << 20, maxTargetBytes: 1 << 20))
        }
    } catch {
        fail("the gate's own parser refuses the forwarded head: \(error)")
    }

    if forwarded.bytes[forwarded.method] != head.bytes[head.method] { fail("the method changed") }
    if bodyLength(forwarded.framing) != bodyLength(head.framing) { fail("the body framing changed: \(head.framing) -> \(forwarded.framing)") }

    var keyIDs: [String] = []
    var identityFields = 0
    var upgradeFields = 0
    var framingFields = 0
    var gateFields: [String: Int] = [:]
    for f in forwarded.fields {
        // Lowercase, `_` read as `-`: the name as an app that folds the two would see it.
        let spelled = String(decoding: forwarded.bytes[f.name], as: UTF8.self).lowercased()
        let name = spelled.replacing("_", with: "-")
        let value = String(decoding: forwarded.bytes[f.value], as: UTF8.self)
        if name == "x-api-key" { fail("a key field was forwarded") }
        let scheme = Array(value.lowercased().utf8.prefix(7))
        if name == "authorization", scheme.count == 7, scheme.starts(with: "bearer".utf8), scheme[6] == 0x20 || scheme[6] == 0x09 {
            fail("a bearer token was forwarded")
        }
        if name.hasPrefix("x-keygate-") {
            identityFields += 1
            if name == "x-keygate-key-id" { keyIDs.append(value) }
        }
        if name == "upgrade" || name == "connection" { upgradeFields += 1 }
        if name == "content-length" || name == "transfer-encoding" { framingFields += 1 }
        if ["x-forwarded-for", "x-forwarded-proto", "x-request-id"].contains(name) {
            gateFields[name, default: 0] += 1
            if name == "x-forwarded-for", !value.hasSuffix("203.0.113.7") { fail("X-Forwarded-For does not end with the peer") }
        }
        let forwarding = ["x-forwarded-for", "x-forwarded-proto", "x-request-id", "x-real-ip", "forwarded", "x-forwarded-host"]
        if forwarding.contains(name), spelled != name { fail("a look-alike of \(name) was forwarded") }
        if ["x-real-ip", "forwarded", "x-forwarded-host"].contains(name), !decision.viaTrustedProxy { fail("\(name) from an untrusted peer was forwarded") }
    }
    if let key = decision.key {
        if keyIDs != [key.record.id] { fail("key id fields \(keyIDs) for key \(key.record.id)") }
    } else if identityFields != 0 {
        fail("identity fields without a key")
    }
    if gateFields != ["x-forwarded-for": 1, "x-forwarded-proto": 1, "x-request-id": 1] { fail("the gate's own fields: \(gateFields)") }
    if framingFields > 1 { fail("\(framingFields) framing fields") }
    if upgradeFields != (upgrade ? 2 : 0) { fail("\(upgradeFields) Connection/Upgrade fields, upgrade \(upgrade)") }

    forwarded.bytes.withUnsafeBufferPointer { p in
        // The path is the normal form the rules matched: normalising it again, as an upstream
        // might, changes nothing.
        if PathNormalizer.normalize(p, forwarded.path, escapedSlashes: s.policy.escapedSlashes) != Array(p[forwarded.path]) {
            fail("the forwarded path is not in normal form")
        }
        QueryCredential.forEachParameter(p, forwarded.query) { name, _ in
            if QueryCredential.decode(p, name) == Array("api_key".utf8) { fail("a key parameter was forwarded") }
        }
    }
}

/// The body a framing announces, with no framing on a request meaning none.
func bodyLength(_ framing: BodyFraming) -> UInt64? {
    switch framing {
    case .contentLength(let n): return n
    case .chunked: return nil
    case .none, .untilClose: return 0
    }
}
