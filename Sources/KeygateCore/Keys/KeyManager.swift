import FoundationEssentials
import Glibc

/// A refused key operation: one line for the CLI, exit code 1.
public struct KeyError: Error, CustomStringConvertible {
    public let description: String
    /// The key named does not exist (the console answers 404 for it).
    public var isNotFound = false
    public init(_ d: String) { description = d }

    static func noKey(_ id: String) -> KeyError {
        var e = KeyError("no key with id \(id)")
        e.isNotFound = true
        return e
    }
}

/// Settings a user gives for a key (create, update, import). nil = not given.
public struct KeySettings {
    public var name: String?
    public var owner: String?
    public var description: String?
    public var scopes: [String]?
    public var allowIPs: [String]?
    public var allowCountries: [String]?
    public var denyCountries: [String]?
    public var notBefore: String?
    public var expires: String?
    public var ttl: String?
    public var rate: String?
    public var burst: Int?
    public var quota: String?
    /// Fingerprints (`sha256:` + hex) of client certificates to bind (added to those bound).
    public var clientCerts: [String]?
    /// Settings to remove (update only); applied before the values given alongside.
    public var clear: Set<Clearable> = []

    public enum Clearable: String, CaseIterable, Sendable {
        case owner, description, scopes
        case allowIPs = "allow-ips"
        case countries
        case notBefore = "not-before"
        case expires, rate, burst, quota
        case clientCerts = "client-certs"
    }

    public init() {}

    /// Validates every given value against the policy; applies them to `r`.
    /// Names, owners, descriptions and reasons are shown in terminals, headers and the console: no
    /// control characters (a terminal escape in a name would act on whoever lists the keys)
    /// and no line separators.
    static func plainText(_ v: String, _ flag: String, atMost max: Int) throws(KeyError) {
        guard v.count <= max else { throw KeyError("\(flag) must be at most \(max) characters") }
        if v.hasControlOrLineBreak { throw KeyError("\(flag) must not contain control characters") }
    }

    func apply(to r: inout KeyRecord, policy: Policy, nowMillis: Int64) throws(KeyError) {
        for c in clear {
            switch c {
            case .owner: r.owner = nil
            case .description: r.description = nil
            case .scopes: r.scopes = []
            case .allowIPs: r.allow_ips = []
            case .countries: r.countries = KeyRecord.Countries()
            case .notBefore: r.not_before = nil
            case .expires: r.expires_at = nil
            case .rate:
                // A burst means nothing without its rate.
                r.rate = nil
                r.burst = nil
            case .burst: r.burst = nil
            case .quota: r.quota = nil
            case .clientCerts: r.client_certs = []
            }
        }
        if let name {
            guard !name.trimmed().isEmpty, name.count <= 200 else { throw KeyError("--name must be 1 to 200 characters") }
            try Self.plainText(name, "--name", atMost: 200)
            r.name = name
        }
        if let owner {
            try Self.plainText(owner, "--owner", atMost: 200)
            r.owner = owner.isEmpty ? nil : owner
        }
        if let description {
            try Self.plainText(description, "--description", atMost: 2000)
            r.description = description.isEmpty ? nil : description
        }
        if let scopes {
            for s in scopes where policy.scopes[s] == nil {
                let known = policy.scopes.keys.sorted().joined(separator: ", ")
                throw KeyError("scope \"\(s)\" is not defined in the policy (defined: \(known.isEmpty ? "none" : known))")
            }
            r.scopes = Array(Set(scopes)).sorted()
        }
        if let allowIPs {
            for ip in allowIPs where CIDR(ip) == nil { throw KeyError("--allow-ip \"\(ip)\" is not an IP address or CIDR") }
            r.allow_ips = allowIPs
        }
        if let allowCountries {
            for c in allowCountries where !CountryCode.isValid(c) { throw KeyError("--allow-country \"\(c)\" is not an ISO 3166-1 alpha-2 code") }
            r.countries.allow = allowCountries.map { $0.uppercased() }
        }
        if let denyCountries {
            for c in denyCountries where !CountryCode.isValid(c) { throw KeyError("--deny-country \"\(c)\" is not an ISO 3166-1 alpha-2 code") }
            r.countries.deny = denyCountries.map { $0.uppercased() }
        }
        let both = Set(r.countries.allow).intersection(r.countries.deny)
        if !both.isEmpty { throw KeyError("\(both.sorted().joined(separator: ", ")) both allowed and denied") }
        if (allowCountries != nil || denyCountries != nil) && policy.geoipDB == nil && !(r.countries.allow.isEmpty && r.countries.deny.isEmpty) {
            throw KeyError("country rules need geoip_db in the policy")
        }
        if expires != nil && ttl != nil { throw KeyError("give --expires or --ttl, not both") }
        if let notBefore { r.not_before = try Self.time(notBefore, "--not-before", nowMillis) }
        if let expires { r.expires_at = try Self.time(expires, "--expires", nowMillis) }
        if let ttl {
            guard let ms = DurationText.parseMillis(ttl), ms > 0 else { throw KeyError("--ttl \"\(ttl)\" is not a duration (like 90d, 12h; at most 100 years)") }
            r.expires_at = Timestamp.format(seconds: (nowMillis + ms) / 1000)
        }
        if let nb = r.not_before.flatMap(Timestamp.parseMillis), let e = r.expires_at.flatMap(Timestamp.parseMillis), e <= nb {
            throw KeyError("the key would expire before it becomes valid")
        }
        if let rate {
            guard RateText.parse(rate) != nil else { throw KeyError("--rate \"\(rate)\" is not a rate (like 100/s, 6000/m; at most \(Bounds.rateCount) per unit)") }
            r.rate = rate.isEmpty ? nil : rate
        }
        if let burst {
            guard burst > 0, burst <= Bounds.burst else { throw KeyError("--burst must be a whole number from 1 to \(Bounds.burst)") }
            guard r.rate != nil else { throw KeyError("--burst needs --rate") }
            r.burst = burst
        }
        if let clientCerts {
            for f in clientCerts where KeyDigest(stored: f) == nil { throw KeyError("client certificate fingerprint \"\(f)\" is not sha256:<64 hex>") }
            r.client_certs = Array(Set(r.client_certs + clientCerts)).sorted()
        }
        if let quota {
            guard QuotaText.parse(quota) != nil else { throw KeyError("--quota \"\(quota)\" is not a quota (like 100000/day, 1000000/month; at most \(Bounds.quotaCount))") }
            r.quota = quota.isEmpty ? nil : quota
        }
    }

    /// RFC 3339, a date, "now", or a duration from now (`90d`).
    static func time(_ text: String, _ flag: String, _ nowMillis: Int64) throws(KeyError) -> String {
        if text == "now" { return Timestamp.format(seconds: nowMillis / 1000) }
        if let ms = DurationText.parseMillis(text) { return Timestamp.format(seconds: (nowMillis + ms) / 1000) }
        guard let ms = Timestamp.parseMillis(text) else {
            throw KeyError("\(flag) \"\(text)\" is not a time (RFC 3339 like 2027-01-31T12:00:00Z, a date, or a duration like 90d)")
        }
        return Timestamp.format(seconds: ms / 1000)
    }
}

/// A request rate: `100/s`, `6000/m`, `10000/h`.
public enum RateText {
    public static func parse(_ s: String) -> (count: Int, perMillis: Int64)? {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(parts[0]), n > 0, n <= Bounds.rateCount
        else { return nil }
        switch parts[1] {
        case "s", "sec", "second": return (n, 1000)
        case "m", "min", "minute": return (n, 60_000)
        case "h", "hour": return (n, 3_600_000)
        default: return nil
        }
    }
}

/// A request budget per calendar period: `100000/day`, `1000000/month`.
public enum QuotaText {
    public enum Period: String, Sendable { case day, month }
    public static func parse(_ s: String) -> (count: Int, period: Period)? {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(parts[0]), n > 0, n <= Bounds.quotaCount,
            let p = Period(rawValue: String(parts[1]))
        else { return nil }
        return (n, p)
    }
}

/// Every change to the key store goes through here: locked, validated, written atomically,
/// and recorded in the audit log.
public struct KeyManager {
    public let policy: Policy
    public let actor: String
    public var storePath: String { policy.keysFile }
    public var auditPath: String {
        let dir = PathText.directory(of: policy.keysFile)
        return PathText.join(dir, "keys.audit.jsonl")
    }

    public init(policy: Policy, actor: String) {
        self.policy = policy
        self.actor = actor
    }

    public func list() throws(KeyError) -> [KeyRecord] {
        do {
            return try KeyStoreFile.load(storePath)
        } catch {
            throw KeyError(error.description)
        }
    }

    public func find(_ id: String) throws(KeyError) -> KeyRecord {
        guard let r = try list().first(where: { $0.id == id }) else { throw .noKey(id) }
        return r
    }

    /// Runs `change` on the store under its lock and writes the result atomically. A store
    /// that another hand changed meanwhile is refused, not overwritten.
    func transact<T>(_ change: (inout KeyStoreDocument) throws(KeyError) -> (T, [AuditEntry])) throws(KeyError) -> T {
        let lock: KeyStoreLock
        var doc: KeyStoreDocument
        do {
            lock = try KeyStoreLock(storePath: storePath)
            doc = try KeyStoreDocument.load(storePath)
        } catch {
            throw KeyError(error.description)
        }
        let (result, audit) = try change(&doc)
        if FileStamp.of(storePath) != doc.stamp {
            throw KeyError("\(storePath) changed while this command ran (an edit without the lock?); nothing was written, run it again")
        }
        // The audit entry is part of the change: on disk before the new store replaces the old,
        // and a failure to record it refuses the change.
        let auditPath = self.auditPath
        do {
            try KeyStoreFile.writeAtomically(doc.bytes(), to: storePath, beforeRename: { () throws(KeyStoreError) in
                try AuditLog.append(audit, to: auditPath)
            })
        } catch {
            throw KeyError(error.description)
        }
        withExtendedLifetime(lock) {}
        return result
    }

    static func freshID(_ doc: KeyStoreDocument) -> String {
        var id = KeyFormat.newID()
        while doc.contains(id: id) { id = KeyFormat.newID() }
        return id
    }

    public func create(_ settings: KeySettings) throws(KeyError) -> (record: KeyRecord, key: String) {
        try transact { (doc) throws(KeyError) in
            let now = Timestamp.nowMillis()
            let id = Self.freshID(doc)
            let generated = KeyFormat.generate(prefix: policy.keyPrefix, id: id)
            var r = KeyRecord(id: id, name: "", hash: KeyDigest(hashing: generated.key).stored, createdAt: Timestamp.format(seconds: now / 1000))
            guard settings.name != nil else { throw KeyError("--name is required") }
            try settings.apply(to: &r, policy: policy, nowMillis: now)
            doc.upsert(r)
            return ((r, generated.key), [AuditEntry(actor: actor, action: "create", keyID: r.id, changes: AuditEntry.diff(nil, r))])
        }
    }

    /// Stores a key that exists elsewhere already (a legacy secret), hashed like any other.
    public func importKey(secret: String, _ settings: KeySettings) throws(KeyError) -> KeyRecord {
        try importKeys([(secret, settings)]).first!
    }

    public func importKeys(_ items: [(String, KeySettings)]) throws(KeyError) -> [KeyRecord] {
        try transact { (doc) throws(KeyError) in
            let now = Timestamp.nowMillis()
            var hashes = Set(doc.lines.map(\.hash))
            var out: [KeyRecord] = []
            var audit: [AuditEntry] = []
            for (index, (secret, settings)) in items.enumerated() {
                let where_ = items.count > 1 ? "line \(index + 1): " : ""
                let bytes = Array(secret.utf8)
                guard KeyFormat.legacyLengths.contains(bytes.count), bytes.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
                    throw KeyError("\(where_)an imported key must be 16 to 256 printable characters without spaces")
                }
                let digest = KeyDigest(hashing: secret)
                let hash = digest.stored
                guard hashes.insert(digest).inserted else { throw KeyError("\(where_)this key is already in the store") }
                var r = KeyRecord(id: Self.freshID(doc), name: "", hash: hash, createdAt: Timestamp.format(seconds: now / 1000))
                guard settings.name != nil else { throw KeyError("\(where_)a name is required") }
                do {
                    try settings.apply(to: &r, policy: policy, nowMillis: now)
                } catch {
                    throw KeyError("\(where_)\(error)")
                }
                doc.upsert(r)
                out.append(r)
                audit.append(AuditEntry(actor: actor, action: "import", keyID: r.id, changes: AuditEntry.diff(nil, r)))
            }
            return (out, audit)
        }
    }

    /// Applies `change` to one key; `action` names it in the audit log.
    @discardableResult
    public func modify(_ id: String, action: String, _ change: (inout KeyRecord, Int64) throws(KeyError) -> Void) throws(KeyError) -> KeyRecord {
        try transact { (doc) throws(KeyError) in
            let before = try Self.record(id, in: doc)
            var after = before
            let now = Timestamp.nowMillis()
            try change(&after, now)
            if after != before { after.updated_at = Timestamp.format(seconds: now / 1000) }
            doc.upsert(after)
            return (after, [AuditEntry(actor: actor, action: action, keyID: id, changes: AuditEntry.diff(before, after))])
        }
    }

    static func record(_ id: String, in doc: KeyStoreDocument) throws(KeyError) -> KeyRecord {
        guard let i = doc.index(of: id) else { throw .noKey(id) }
        do {
            return try doc.record(at: i)
        } catch {
            throw KeyError(error.description)
        }
    }

    public func update(_ id: String, _ settings: KeySettings) throws(KeyError) -> KeyRecord {
        try modify(id, action: "update") { (r, now) throws(KeyError) in
            if r.status == .revoked { throw KeyError("key \(id) is revoked and cannot be changed") }
            try settings.apply(to: &r, policy: policy, nowMillis: now)
        }
    }

    public func revoke(_ id: String, reason: String?) throws(KeyError) -> KeyRecord {
        if let reason {
            try KeySettings.plainText(reason, "--reason", atMost: 2000)
        }
        return try modify(id, action: "revoke") { (r, now) throws(KeyError) in
            if r.status == .revoked { throw KeyError("key \(id) is already revoked") }
            r.status = .revoked
            r.revoked_at = Timestamp.format(seconds: now / 1000)
            r.revoke_reason = reason
        }
    }

    public func setEnabled(_ id: String, _ enabled: Bool) throws(KeyError) -> KeyRecord {
        try modify(id, action: enabled ? "enable" : "disable") { (r, _) throws(KeyError) in
            if r.status == .revoked { throw KeyError("key \(id) is revoked; revocation is final") }
            let target: KeyRecord.Status = enabled ? .active : .disabled
            if r.status == target { throw KeyError("key \(id) is already \(enabled ? "enabled" : "disabled")") }
            r.status = target
        }
    }

    public func delete(_ id: String) throws(KeyError) {
        try transact { (doc) throws(KeyError) in
            let before = try Self.record(id, in: doc)
            doc.remove(id: id)
            return ((), [AuditEntry(actor: actor, action: "delete", keyID: id, changes: AuditEntry.diff(before, nil))])
        }
    }

    /// A new key with the same settings; the old one expires after `graceMillis`.
    public func rotate(_ id: String, graceMillis: Int64) throws(KeyError) -> (record: KeyRecord, key: String, old: KeyRecord) {
        try transact { (doc) throws(KeyError) in
            let old = try Self.record(id, in: doc)
            if old.status == .revoked { throw KeyError("key \(id) is revoked and cannot be rotated") }
            if let to = old.rotated_to { throw KeyError("key \(id) was already rotated to \(to)") }
            let now = Timestamp.nowMillis()
            let newID = Self.freshID(doc)
            let generated = KeyFormat.generate(prefix: policy.keyPrefix, id: newID)
            var fresh = old
            fresh.id = newID
            fresh.hash = KeyDigest(hashing: generated.key).stored
            fresh.status = .active
            fresh.created_at = Timestamp.format(seconds: now / 1000)
            fresh.updated_at = fresh.created_at
            fresh.revoked_at = nil
            fresh.revoke_reason = nil
            fresh.rotated_from = id
            fresh.rotated_to = nil
            var updated = old
            updated.rotated_to = newID
            let graceEnd = Timestamp.format(seconds: (now + graceMillis) / 1000)
            if let e = old.expires_at.flatMap(Timestamp.parseMillis), e < now + graceMillis {
                // Never extend a key's life by rotating it.
            } else {
                updated.expires_at = graceEnd
            }
            updated.updated_at = fresh.created_at
            doc.upsert(updated)
            doc.upsert(fresh)
            let audit = [
                AuditEntry(actor: actor, action: "rotate", keyID: id, changes: AuditEntry.diff(old, updated)),
                AuditEntry(actor: actor, action: "create", keyID: newID, changes: AuditEntry.diff(nil, fresh)),
            ]
            return ((fresh, generated.key, updated), audit)
        }
    }
}
