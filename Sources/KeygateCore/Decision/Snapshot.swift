import Synchronization

/// Everything a decision reads, immutable: the policy, the keys by digest and the GeoIP
/// database. A reload builds a new one off the loops and swaps it whole.
public final class Snapshot: Sendable {
    public let policy: Policy
    public let keys: [KeyDigest: KeyEntry]
    /// Keys by the fingerprints of the client certificates bound to them.
    public let keysByCertificate: [KeyDigest: KeyEntry]
    public let geoip: GeoIPDatabase?
    public let allowIPs: CIDRSet?
    public let trustedProxies: CIDRSet?
    public let allowCountries: Set<UInt16>
    public let denyCountries: Set<UInt16>
    public let prefixBytes: [UInt8]
    public let credentialHeaders: [[UInt8]]
    /// Query parameters that may carry the key (exact names).
    public let credentialQuery: [[UInt8]]
    /// Lower-case identity prefix, with `-` (matched reading `_` as `-`).
    public let identityPrefixLower: [UInt8]
    public let identityPrefix: [UInt8]
    public let loadedAtMillis: Int64
    public let keysStamp: FileStamp?
    public let geoipStamp: FileStamp?
    /// Whether limits are the fleet's or this gate's; one object for the life of the process.
    public let fleet: FleetState
    /// Entries by the SHA-256 of their store line: a reload reuses every unchanged line's entry.
    let entriesByLine: [KeyDigest: KeyEntry]

    /// For tests and tools: a snapshot of the given records.
    public convenience init(policy: Policy, records: [KeyRecord], geoip: GeoIPDatabase?) {
        var keys: [KeyDigest: KeyEntry] = [:]
        for r in records {
            if let d = KeyDigest(stored: r.hash) { keys[d] = KeyEntry(record: r, scopes: policy.scopes, identityPrefix: policy.identityPrefix) }
        }
        self.init(policy: policy, keys: keys, entriesByLine: [:], geoip: geoip, keysStamp: nil, geoipStamp: nil, fleet: FleetState())
    }

    init(
        policy: Policy, keys: [KeyDigest: KeyEntry], entriesByLine: [KeyDigest: KeyEntry], geoip: GeoIPDatabase?, keysStamp: FileStamp?,
        geoipStamp: FileStamp?, fleet: FleetState
    ) {
        self.fleet = fleet
        self.keysStamp = keysStamp
        self.geoipStamp = geoipStamp
        self.policy = policy
        self.keys = keys
        var byCert: [KeyDigest: KeyEntry] = [:]
        for entry in keys.values where !entry.record.client_certs.isEmpty {
            for f in entry.record.client_certs {
                if let d = KeyDigest(stored: f) { byCert[d] = entry }
            }
        }
        keysByCertificate = byCert
        self.entriesByLine = entriesByLine
        self.geoip = geoip
        allowIPs = policy.access.allowIPs.isEmpty ? nil : CIDRSet(policy.access.allowIPs)
        trustedProxies = policy.trustedProxies.isEmpty ? nil : CIDRSet(policy.trustedProxies)
        allowCountries = Set(policy.access.countries.allow.map(CountryCode.pack))
        denyCountries = Set(policy.access.countries.deny.map(CountryCode.pack))
        prefixBytes = Array(policy.keyPrefix.utf8)
        credentialHeaders = policy.credentialHeaders.map { Array($0.lowercased().replacing("_", with: "-").utf8) }
        credentialQuery = policy.credentialQuery.map { Array($0.utf8) }
        identityPrefixLower = Array(policy.identityPrefix.lowercased().replacing("_", with: "-").utf8)
        identityPrefix = Array(policy.identityPrefix.utf8)
        loadedAtMillis = Timestamp.nowMillis()
    }

    public var keyCount: Int { keys.count }

    /// Entries by key id, built on first use (off the hot path: the cluster sync and the
    /// admin plane look keys up by id).
    public var keysByID: [String: KeyEntry] {
        byID.withLock { cached in
            if let c = cached { return c }
            var m: [String: KeyEntry] = [:]
            m.reserveCapacity(keys.count)
            for e in keys.values { m[e.record.id] = e }
            cached = m
            return m
        }
    }
    private let byID = Mutex<[String: KeyEntry]?>(nil)
}
