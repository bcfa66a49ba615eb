import KeygateHTTP
import Synchronization

/// A key as the gate uses it: the record plus everything precomputed that the hot path needs.
public final class KeyEntry: Sendable {
    public let record: KeyRecord
    public let digest: KeyDigest
    public let notBeforeMillis: Int64?
    public let expiresMillis: Int64?
    public let allowIPs: CIDRSet?
    public let allowCountries: Set<UInt16>
    public let denyCountries: Set<UInt16>
    /// nil = no scopes: every route is allowed.
    public let routes: [RoutePattern]?
    /// Header-safe values for the identity headers.
    public let idBytes: [UInt8]
    public let nameBytes: [UInt8]
    public let ownerBytes: [UInt8]
    public let scopesBytes: [UInt8]
    /// The usage event's key fields, already JSON: `,"key_id":…,"key_name":…,"owner":…`.
    public let usageJSON: [UInt8]
    /// The four identity header lines for the upstream, with `identityPrefix`, built once.
    public let identityHeaders: [UInt8]
    public let identityPrefix: String
    /// Rate and quota state; nil = unlimited.
    public let limiter: KeyLimiter?
    /// Unix seconds of the last allowed request (0 = not since start), shared by all loops and
    /// with the entry the previous snapshot held for the same key, so that a use decided on the
    /// old snapshot during a reload is not lost.
    let lastUse: LastUse
    public var lastUsed: Int64 { lastUse.seconds.load(ordering: .relaxed) }

    final class LastUse: Sendable {
        let seconds = Atomic<Int64>(0)
    }

    /// A revocation, disable or delete another host pushed before this copy of the store
    /// shows it (`PushedStatus`), set by the cluster sync.
    public let pushed = Atomic<UInt8>(0)

    /// Records a use; a relaxed load first, so a busy key's cache line is written once a second.
    @inline(__always)
    public func markUsed(_ seconds: Int64) {
        if lastUse.seconds.load(ordering: .relaxed) != seconds { lastUse.seconds.store(seconds, ordering: .relaxed) }
    }

    public init(
        record: KeyRecord, scopes: [String: [RoutePattern]], limits: Policy.Limits = Policy.Limits(), clustered: Bool = false, previous: KeyEntry? = nil,
        identityPrefix: String = "X-Keygate-"
    ) {
        lastUse = previous?.lastUse ?? LastUse()
        limiter = KeyLimiter.make(record: record, limits: limits, clustered: clustered, previous: previous?.limiter)
        digest = KeyDigest(stored: record.hash) ?? KeyDigest(hashing: record.hash)
        self.record = record
        notBeforeMillis = record.not_before.flatMap(Timestamp.parseMillis)
        expiresMillis = record.expires_at.flatMap(Timestamp.parseMillis)
        let cidrs = record.allow_ips.compactMap(CIDR.init)
        allowIPs = record.allow_ips.isEmpty ? nil : CIDRSet(cidrs)
        allowCountries = Set(record.countries.allow.map(CountryCode.pack))
        denyCountries = Set(record.countries.deny.map(CountryCode.pack))
        if record.scopes.isEmpty {
            routes = nil
        } else {
            // A scope the policy does not define grants nothing.
            routes = record.scopes.flatMap { scopes[$0] ?? [] }
        }
        idBytes = Self.headerSafe(record.id)
        nameBytes = Self.headerSafe(record.name)
        ownerBytes = Self.headerSafe(record.owner ?? "")
        scopesBytes = Self.headerSafe(record.scopes.joined(separator: ","))
        var json: [UInt8] = []
        json.append(#","key_id":"# as StaticString)
        JSONBytes.appendString(record.id, to: &json)
        json.append(#","key_name":"# as StaticString)
        JSONBytes.appendString(record.name, to: &json)
        json.append(#","owner":"# as StaticString)
        if let owner = record.owner { JSONBytes.appendString(owner, to: &json) } else { json.append("null" as StaticString) }
        usageJSON = json
        self.identityPrefix = identityPrefix
        var headers: [UInt8] = []
        for (name, value) in [("Key-Id", idBytes), ("Key-Name", nameBytes), ("Owner", ownerBytes), ("Scopes", scopesBytes)] {
            headers.append(contentsOf: identityPrefix.utf8)
            headers.append(contentsOf: name.utf8)
            headers.append(contentsOf: ": ".utf8)
            headers.append(contentsOf: value)
            headers.append(contentsOf: "\r\n".utf8)
        }
        identityHeaders = headers
    }

    /// Field values cannot carry controls; anything else (UTF-8 included) passes as obs-text.
    static func headerSafe(_ s: String) -> [UInt8] {
        var out = Array(s.utf8).map { ($0 < 0x20 || $0 == 0x7F) ? UInt8(ascii: " ") : $0 }
        while out.last == 0x20 { out.removeLast() }
        while out.first == 0x20 { out.removeFirst() }
        return out
    }
}
