/// One key as stored in `keys.jsonl`: settings and state, never the secret.
public struct KeyRecord: Codable, Sendable, Equatable {
    public struct Countries: Codable, Sendable, Equatable {
        public var allow: [String]
        public var deny: [String]
        public init(allow: [String] = [], deny: [String] = []) {
            self.allow = allow
            self.deny = deny
        }
    }

    public enum Status: String, Codable, Sendable {
        case active, disabled, revoked
    }

    public var id: String
    public var name: String
    public var description: String?
    public var owner: String?
    public var hash: String
    public var scopes: [String]
    public var allow_ips: [String]
    /// SHA-256 fingerprints (`sha256:` + hex) of client certificates that authenticate as
    /// this key.
    public var client_certs: [String] = []
    public var countries: Countries
    public var not_before: String?
    public var expires_at: String?
    public var rate: String?
    public var burst: Int?
    public var quota: String?
    public var status: Status
    public var created_at: String
    public var updated_at: String
    public var revoked_at: String?
    public var revoke_reason: String?
    public var rotated_from: String?
    public var rotated_to: String?

    public init(id: String, name: String, hash: String, createdAt: String) {
        self.id = id
        self.name = name
        self.hash = hash
        self.scopes = []
        self.allow_ips = []
        self.countries = Countries()
        self.status = .active
        self.created_at = createdAt
        self.updated_at = createdAt
    }

    /// The state users see: the stored status, or `expired` / `pending` from the validity window.
    public func effectiveState(nowMillis: Int64) -> String {
        if status != .active { return status.rawValue }
        if let e = expires_at, let t = Timestamp.parseMillis(e), nowMillis >= t { return "expired" }
        if let nb = not_before, let t = Timestamp.parseMillis(nb), nowMillis < t { return "pending" }
        return "active"
    }
}
