import FoundationEssentials
import Glibc
import KeygateCluster
import KeygateCore

/// One console request, read whole by `ConsoleConnection`.
struct ConsoleRequest: Sendable {
    var method: String
    var path: String
    var query: [String: String]
    /// Lower-case names; the first value of each.
    var headers: [String: String]
    var body: [UInt8]
    var peer: String
}

struct ConsoleResponse: Sendable {
    var status: Int
    var contentType = "application/json"
    var body: [UInt8] = []
    var headers: [(String, String)] = []
    /// Answered this much later (failed sign-ins).
    var delayMillis = 0
}

/// The console's JSON API (documented in docs/console-api.md): sessions, keys, usage and the
/// audit log. It edits the key store through `KeyManager`, under the same lock and into the
/// same audit log as the CLI, with the console user as the actor. Runs on the console's work
/// queue, never on an event loop.
final class ConsoleAPI: @unchecked Sendable {
    unowned let server: Server
    let sessions: ConsoleSessions
    let tlsOn: Bool

    init(server: Server, settings: Policy.Console) {
        self.server = server
        tlsOn = settings.tls
        sessions = ConsoleSessions(ttlMillis: settings.sessionTTLMillis)
    }

    var policy: Policy { server.snapshot.policy }

    func handle(_ req: ConsoleRequest) -> ConsoleResponse {
        if !req.path.hasPrefix("/api/") { return ConsoleAssets.answer(req.path) }
        let parts = req.path.dropFirst("/api/".count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts == ["login"] {
            return req.method == "POST" ? login(req) : Self.error(405, "method_not_allowed", "use POST")
        }
        // The page asks on load whether it is signed in: a plain answer, not an error.
        if parts == ["session"] && req.method == "GET" {
            let t = Self.cookie(req.headers["cookie"], "keygate_session")
            if t.flatMap({ sessions.find($0) }) == nil { return Self.json(200, ["signed_in": false]) }
        }
        // Everything else needs a session; every change needs its CSRF token too.
        guard let token = Self.cookie(req.headers["cookie"], "keygate_session"), let session = sessions.find(token) else {
            return Self.error(401, "not_signed_in", "sign in first")
        }
        let users = (try? ConsoleUsers.read(policy.consoleUsersFile)) ?? []
        guard let user = users.first(where: { $0.name == session.user }) else {
            // Removed since signing in: the session ends with the user.
            sessions.endAll(user: session.user)
            return Self.error(401, "not_signed_in", "this console user no longer exists")
        }
        guard user.password == session.credential else {
            // Removed and added again (a new password) since signing in.
            sessions.end(token)
            return Self.error(401, "not_signed_in", "the password changed since this session began; sign in again")
        }
        let changes = req.method != "GET" && req.method != "HEAD"
        if changes && req.headers["x-csrf-token"] != session.csrf {
            return Self.error(403, "csrf", "the X-CSRF-Token header is missing or wrong; sign in again")
        }
        if parts == ["logout"] {
            guard req.method == "POST" else { return Self.error(405, "method_not_allowed", "use POST") }
            sessions.end(token)
            var r = Self.json(200, ["signed_out": true])
            r.headers.append(("Set-Cookie", "keygate_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"))
            return r
        }
        if parts == ["session"] {
            return Self.json(200, ["signed_in": true, "user": user.name, "role": user.role.rawValue, "csrf": session.csrf, "expires_at": Timestamp.format(seconds: session.expiresMillis / 1000)])
        }
        if changes && user.role != .admin {
            return Self.error(403, "forbidden", "viewers may look but not change; ask an admin")
        }
        return route(req, parts, actor: user.name)
    }

    private func route(_ req: ConsoleRequest, _ parts: [String], actor: String) -> ConsoleResponse {
        let m = KeyManager(policy: policy, actor: actor)
        switch (req.method, parts.count, parts.first) {
        case ("GET", 1, "policy"):
            return Self.json(200, ["scopes": policy.scopes.keys.sorted(), "key_prefix": policy.keyPrefix, "cluster": policy.cluster != nil])
        case ("GET", 1, "keys"):
            return keysList(m)
        case ("POST", 1, "keys"):
            return create(m, req)
        case ("GET", 1, "audit"):
            return audit(req)
        case (_, 2, "keys"), (_, 3, "keys"):
            return keyRoute(m, req, id: parts[1], action: parts.count == 3 ? parts[2] : nil)
        default:
            return Self.error(404, "not_found", "no such API: \(req.method) \(req.path)")
        }
    }

    // MARK: sessions

    private func login(_ req: ConsoleRequest) -> ConsoleResponse {
        guard let o = Self.object(req.body), let name = o["user"]?.string, let password = o["password"]?.string else {
            return Self.error(400, "bad_request", "send {\"user\": …, \"password\": …}")
        }
        let wait = sessions.lockedFor(user: name, address: req.peer)
        if wait > 0 {
            var r = Self.error(429, "locked_out", "too many failed sign-ins; try again in \((wait + 59_999) / 60_000) minutes")
            r.headers.append(("Retry-After", String((wait + 999) / 1000)))
            return r
        }
        let users: [ConsoleUser]
        do {
            users = try ConsoleUsers.read(policy.consoleUsersFile)
        } catch {
            server.log.error("console: \(error)")
            return Self.error(500, "users_file", "the console users file cannot be read; see the gate's log")
        }
        let user = users.first { $0.name == name }
        // A missing user costs a hash check like a wrong password, so names cannot be probed by time.
        let ok = ConsoleUsers.verify(password, against: user?.password ?? ConsoleUsers.decoy) && user != nil
        guard ok, let user else {
            sessions.failed(user: name, address: req.peer)
            server.log.warning("console: failed sign-in for \"\(name.prefix(64))\" from \(req.peer)")
            var r = Self.error(401, "invalid_credentials", "the user name or password is wrong")
            r.delayMillis = ConsoleSessions.failureDelayMillis
            return r
        }
        sessions.succeeded(user: name)
        let (token, session) = sessions.create(user: user)
        var r = Self.json(200, ["user": user.name, "role": user.role.rawValue, "csrf": session.csrf])
        let secure = tlsOn || req.headers["x-forwarded-proto"]?.lowercased() == "https" ? "; Secure" : ""
        r.headers.append(("Set-Cookie", "keygate_session=\(token); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(sessions.ttlMillis / 1000)\(secure)"))
        server.log.info("console: \(user.name) signed in from \(req.peer)")
        return r
    }

    // MARK: keys

    private func keysList(_ m: KeyManager) -> ConsoleResponse {
        do {
            let records = try m.list()
            let now = Timestamp.nowMillis()
            let used = lastUse()
            let spark = server.rollups?.last24Hours(nowMillis: now) ?? [:]
            return Self.json(200, records.map { keyJSON($0, now: now, lastUsed: used, spark: spark) })
        } catch {
            return Self.error(500, "key_store", error.description)
        }
    }

    private func create(_ m: KeyManager, _ req: ConsoleRequest) -> ConsoleResponse {
        guard let o = Self.object(req.body) else { return Self.error(400, "bad_request", "the body must be a JSON object") }
        do {
            let settings = try Self.settings(o, updating: false)
            let (record, key) = try m.create(settings)
            var out = keyJSON(record, now: Timestamp.nowMillis(), lastUsed: [:], spark: [:])
            out["key"] = key
            return Self.json(201, out)
        } catch {
            return Self.error(400, "invalid", error.description)
        }
    }

    private func keyRoute(_ m: KeyManager, _ req: ConsoleRequest, id: String, action: String?) -> ConsoleResponse {
        let now = Timestamp.nowMillis()
        let o = Self.object(req.body) ?? [:]
        do {
            switch (req.method, action) {
            case ("GET", nil):
                let r = try m.find(id)
                var out = keyJSON(r, now: now, lastUsed: lastUse(), spark: server.rollups?.last24Hours(nowMillis: now) ?? [:])
                let live = server.snapshot.keysByID[id]?.limiter?.usedInPeriod(wallSeconds: now / 1000) ?? 0
                if let q = KeyObservations.quota(r, policy, live: Int64(live)) {
                    out["quota_used"] = q.used
                    out["quota_remaining"] = q.remaining
                }
                return Self.json(200, out)
            case ("GET", "usage"):
                _ = try m.find(id)
                return usage(id, window: (req.query["window"] ?? "24h"))
            case ("PATCH", nil):
                let r = try m.update(id, try Self.settings(o, updating: true))
                return Self.json(200, keyJSON(r, now: now, lastUsed: lastUse(), spark: [:]))
            case ("DELETE", nil):
                try m.delete(id)
                pushToFleet(id, .delete)
                return Self.json(200, ["deleted": id])
            case ("POST", "revoke"):
                let r = try m.revoke(id, reason: try Self.string(o, "reason").flatMap { $0.isEmpty ? nil : $0 })
                pushToFleet(id, .revoke)
                return Self.json(200, keyJSON(r, now: now, lastUsed: lastUse(), spark: [:]))
            case ("POST", "disable"), ("POST", "enable"):
                let r = try m.setEnabled(id, action == "enable")
                pushToFleet(id, action == "enable" ? .enable : .disable)
                return Self.json(200, keyJSON(r, now: now, lastUsed: lastUse(), spark: [:]))
            case ("POST", "rotate"):
                let grace = try Self.string(o, "grace") ?? "24h"
                guard let ms = DurationText.parseMillis(grace) else { return Self.error(400, "invalid", "grace \"\(grace)\" is not a duration (like 24h)") }
                let (record, key, old) = try m.rotate(id, graceMillis: ms)
                var out = keyJSON(record, now: now, lastUsed: [:], spark: [:])
                out["key"] = key
                out["old"] = keyJSON(old, now: now, lastUsed: lastUse(), spark: [:])
                return Self.json(201, out)
            default:
                return Self.error(404, "not_found", "no such API: \(req.method) \(req.path)")
            }
        } catch {
            return Self.error(error.isNotFound ? 404 : 400, error.isNotFound ? "not_found" : "invalid", error.description)
        }
    }

    private func pushToFleet(_ id: String, _ action: FleetStore.Action) {
        if let warning = FleetClient.push(policy, id: id, action: action) { server.log.warning("console: \(warning)") }
    }

    /// The latest use of each key, this gate's own uses included.
    private func lastUse() -> [String: Int64] {
        var live: [String: Int64] = [:]
        for entry in server.snapshot.keys.values {
            let t = entry.lastUsed
            if t > 0 { live[entry.record.id] = t }
        }
        return KeyObservations.lastUse(policy, live: live)
    }

    /// A record as the console shows it: never its hash.
    func keyJSON(_ r: KeyRecord, now: Int64, lastUsed: [String: Int64], spark: [String: [Int]]) -> [String: Any] {
        var o: [String: Any] = r.jsonObject()
        o["hash"] = nil
        let state = r.effectiveState(nowMillis: now)
        o["state"] = state
        let used = lastUsed[r.id]
        o["last_used"] = used.map { Timestamp.format(seconds: $0) } ?? JSONValue.null
        let row = spark[r.id] ?? [Int](repeating: 0, count: 24)
        o["spark"] = row
        o["requests_24h"] = row.reduce(0, +)
        let expires = r.expires_at.flatMap(Timestamp.parseMillis)
        o["expiring_soon"] = state == "active" && expires.map { $0 - now < 7 * 86_400_000 } == true
        let created = Timestamp.parseMillis(r.created_at) ?? now
        let lastActivity = used.map { $0 * 1000 } ?? created
        o["unused_90d"] = state == "active" && now - lastActivity > 90 * 86_400_000
        return o
    }

    /// Create and update fields, as the CLI's flags: `null` (or "") clears a field on update.
    static func settings(_ o: [String: JSONValue], updating: Bool) throws(KeyError) -> KeySettings {
        var s = KeySettings()
        func text(_ k: String) throws(KeyError) -> String? {
            try string(o, k).flatMap { $0.isEmpty ? nil : $0 }
        }
        func list(_ v: JSONValue?, _ k: String) throws(KeyError) -> [String]? {
            guard let v, !v.isNull else { return nil }
            guard let a = v.strings else { throw KeyError("\(k) must be a list of strings") }
            return a.map { $0.trimmed() }.filter { !$0.isEmpty }
        }
        func isCleared(_ k: String) -> Bool {
            guard let v = o[k] else { return false }
            return v.isNull || v.string?.isEmpty == true || v.array?.isEmpty == true
        }
        let known: Set<String> = [
            "name", "owner", "description", "scopes", "allow_ips", "countries", "not_before", "expires", "ttl", "rate", "burst", "quota",
        ]
        if let unknown = o.keys.first(where: { !known.contains($0) }) { throw KeyError("unknown field \"\(unknown)\"") }
        s.name = try text("name")
        s.owner = try text("owner")
        s.description = try text("description")
        s.notBefore = try text("not_before")
        s.expires = try text("expires")
        s.ttl = try text("ttl")
        s.rate = try text("rate")
        s.quota = try text("quota")
        if let b = o["burst"], !b.isNull {
            guard let n = b.int64, let small = Int(exactly: n) else { throw KeyError("burst must be a whole number") }
            s.burst = small
        }
        if let scopes = try list(o["scopes"], "scopes"), !scopes.isEmpty { s.scopes = scopes }
        if let ips = try list(o["allow_ips"], "allow_ips"), !ips.isEmpty { s.allowIPs = ips }
        if let c = o["countries"], !c.isNull {
            guard let cd = c.object else { throw KeyError("countries must be {\"allow\": […], \"deny\": […]}") }
            if let a = try list(cd["allow"], "countries.allow"), !a.isEmpty { s.allowCountries = a }
            if let d = try list(cd["deny"], "countries.deny"), !d.isEmpty { s.denyCountries = d }
        }
        if updating {
            let map: [(String, KeySettings.Clearable)] = [
                ("owner", .owner), ("description", .description), ("scopes", .scopes), ("allow_ips", .allowIPs), ("not_before", .notBefore),
                ("expires", .expires), ("rate", .rate), ("burst", .burst), ("quota", .quota),
            ]
            for (k, c) in map where isCleared(k) { s.clear.insert(c) }
            if let c = o["countries"]?.object, c["allow"]?.array?.isEmpty ?? true, c["deny"]?.array?.isEmpty ?? true {
                s.clear.insert(.countries)
            } else if o["countries"]?.isNull == true {
                s.clear.insert(.countries)
            }
            if isCleared("name") { throw KeyError("name cannot be empty") }
        }
        return s
    }

    // MARK: usage and audit

    private func usage(_ id: String, window: String) -> ConsoleResponse {
        let hourly: Bool
        let count: Int
        switch window {
        case "24h": (hourly, count) = (true, 24)
        case "48h": (hourly, count) = (true, 48)
        case "7d": (hourly, count) = (false, 7)
        case "30d": (hourly, count) = (false, 30)
        default: return Self.error(400, "bad_request", "window is 24h, 48h, 7d or 30d")
        }
        let series = server.rollups?.series(id, hourly: hourly, count: count, nowMillis: Timestamp.nowMillis()) ?? []
        var total = RollupCell()
        var buckets: [[String: Any]] = []
        for (start, cell) in series {
            total.add(cell)
            buckets.append(["start": Timestamp.format(seconds: start / 1000), "requests": cell.requests, "denied": cell.denied])
        }
        return Self.json(200, [
            "window": window, "buckets": buckets, "requests": total.requests, "denied": total.denied, "by_route": total.routes,
            "by_status": total.statuses, "by_reason": total.reasons, "by_country": total.countries,
        ])
    }

    private func audit(_ req: ConsoleRequest) -> ConsoleResponse {
        let m = KeyManager(policy: policy, actor: "")
        var entries = AuditLog.read(m.auditPath)
        if let key = req.query["key"], !key.isEmpty { entries = entries.filter { $0.key_id == key } }
        if let actor = req.query["actor"], !actor.isEmpty { entries = entries.filter { $0.actor == actor } }
        if let action = req.query["action"], !action.isEmpty { entries = entries.filter { $0.action == action } }
        entries.reverse()  // newest first
        if req.query["format"] == "csv" {
            var csv = "ts,actor,action,key_id,changes\r\n"
            for e in entries {
                let changes = e.changes.keys.sorted().map { k in "\(k): \(JSONValue.short(e.changes[k]?.old)) → \(JSONValue.short(e.changes[k]?.new))" }.joined(separator: "; ")
                csv += [e.ts, e.actor, e.action, e.key_id, changes].map(Self.csvField).joined(separator: ",") + "\r\n"
            }
            return ConsoleResponse(
                status: 200, contentType: "text/csv; charset=utf-8", body: Array(csv.utf8),
                headers: [("Content-Disposition", "attachment; filename=\"keygate-audit.csv\"")])
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(entries)).map { Array($0) } ?? Array("[]".utf8)
        return ConsoleResponse(status: 200, body: body + [0x0A])
    }

    /// RFC 4180 quoting, and a leading ' for cells a spreadsheet would run as a formula.
    static func csvField(_ s: String) -> String {
        var v = s
        if let first = v.first, "=+-@\t\r".contains(first) { v = "'" + v }
        if v.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) { v = "\"" + v.replacing("\"", with: "\"\"") + "\"" }
        return v
    }

    // MARK: helpers

    /// A field that may be absent or null, but when given must be a string: a number where
    /// a string belongs is refused, not ignored.
    static func string(_ o: [String: JSONValue], _ k: String) throws(KeyError) -> String? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let t = v.string else { throw KeyError("\(k) must be a string") }
        return t
    }

    static func object(_ body: [UInt8]) -> [String: JSONValue]? {
        guard !body.isEmpty else { return nil }
        return JSONValue.parseObject(body)
    }

    static func json(_ status: Int, _ value: Any) -> ConsoleResponse {
        let data = JSONValue.from(value)?.encoded() ?? Array("{}".utf8)
        return ConsoleResponse(status: status, body: data + [0x0A])
    }

    static func error(_ status: Int, _ code: String, _ message: String) -> ConsoleResponse {
        json(status, ["error": code, "message": message])
    }

    static func cookie(_ header: String?, _ name: String) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0].trimmed() == name { return String(kv[1]).trimmed() }
        }
        return nil
    }
}
