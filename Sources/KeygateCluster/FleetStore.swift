import FoundationEssentials
import Glibc
import KeygateCore

/// What the fleet keeps in Redis, and the commands that read and write it. Every name starts
/// with `keygate:`, in the database the URL selects:
///
/// - `keygate:rate` — hash, key id → requests allowed by any gate (a running total; each gate
///   applies the growth it did not cause). Expires after an hour without traffic.
/// - `keygate:quota:2026-11-30`, `keygate:quota:2026-11` — hash per quota period, key id →
///   requests counted against the quota. Expire a day after their period.
/// - `keygate:last_used` — hash, key id → unix seconds of the fleet's latest use.
/// - `keygate:changes` — stream of pushed key changes (`id`, `action`, `at`), the last day's
///   kept, for gates that were away; the same change is published on the channel
///   `keygate:changes:<db>` for the gates that are listening.
public enum FleetStore {
    public static let rate = "keygate:rate"
    public static let lastUsed = "keygate:last_used"
    public static let changes = "keygate:changes"
    public static func channel(_ a: RedisAddress) -> String { "keygate:changes:\(a.db)" }
    public static func quota(_ label: String) -> String { "keygate:quota:\(label)" }
    /// What a count read back may be: HINCRBY totals only grow from zero.
    static let countRange: ClosedRange<Int64> = 0...Int64.max
    /// How far back a (re)connecting gate reads pushed changes.
    public static let replayMillis: Int64 = 86_400_000

    /// One round trip per sync: add this gate's counts, keep the latest last-use times, and
    /// answer the fleet's totals. ARGV: day label, month label, then three counted lists —
    /// rate (id, n), quota (id, d|m, n), last use (id, seconds).
    static let syncScript = """
        local i = 3
        local day, month = 'keygate:quota:' .. ARGV[1], 'keygate:quota:' .. ARGV[2]
        local n = tonumber(ARGV[i]); i = i + 1
        for _ = 1, n do redis.call('HINCRBY', 'keygate:rate', ARGV[i], ARGV[i + 1]); i = i + 2 end
        if n > 0 then redis.call('PEXPIRE', 'keygate:rate', 3600000) end
        n = tonumber(ARGV[i]); i = i + 1
        for _ = 1, n do
          local h = ARGV[i + 1] == 'd' and day or month
          redis.call('HINCRBY', h, ARGV[i], ARGV[i + 2]); i = i + 3
        end
        if n > 0 then
          redis.call('EXPIRE', day, 172800)
          redis.call('EXPIRE', month, 2764800)
        end
        n = tonumber(ARGV[i]); i = i + 1
        for _ = 1, n do
          local old = tonumber(redis.call('HGET', 'keygate:last_used', ARGV[i]) or '0')
          if tonumber(ARGV[i + 1]) > old then redis.call('HSET', 'keygate:last_used', ARGV[i], ARGV[i + 1]) end
          i = i + 2
        end
        return {redis.call('HGETALL', 'keygate:rate'), redis.call('HGETALL', day), redis.call('HGETALL', month)}
        """

    public struct Counts {
        public var rate: [(id: String, count: Int64)] = []
        public var quota: [(id: String, monthly: Bool, count: Int64)] = []
        public var lastUsed: [(id: String, seconds: Int64)] = []
        public init() {}
    }

    public struct Totals {
        public var rate: [String: Int64]
        public var day: [String: Int64]
        public var month: [String: Int64]
    }

    /// Pushes `counts` and returns the fleet's totals.
    public static func sync(_ c: RedisConnection, _ counts: Counts, wallSeconds: Int64) throws(RedisError) -> Totals {
        var args = ["EVAL", syncScript, "0", KeyStateFile.periodLabel(.day, wallSeconds), KeyStateFile.periodLabel(.month, wallSeconds)]
        args.reserveCapacity(args.count + 3 + counts.rate.count * 2 + counts.quota.count * 3 + counts.lastUsed.count * 2)
        args.append(String(counts.rate.count))
        for r in counts.rate { args += [r.id, String(r.count)] }
        args.append(String(counts.quota.count))
        for q in counts.quota { args += [q.id, q.monthly ? "m" : "d", String(q.count)] }
        args.append(String(counts.lastUsed.count))
        for l in counts.lastUsed { args += [l.id, String(l.seconds)] }
        let reply = try c.command(args)
        if case .error(let e) = reply { throw RedisError("sync: \(e)") }
        let parts = reply.items
        guard parts.count == 3 else { throw RedisError("sync: unexpected answer") }
        return Totals(rate: parts[0].numbersByName(in: countRange), day: parts[1].numbersByName(in: countRange), month: parts[2].numbersByName(in: countRange))
    }

    // MARK: pushed key changes

    public enum Action: String, Sendable {
        case revoke, disable, enable, delete

        public var status: PushedStatus {
            switch self {
            case .revoke: return .revoked
            case .disable: return .disabled
            case .enable: return .none
            case .delete: return .deleted
            }
        }
    }

    public struct Change: Sendable, Equatable {
        public var id: String
        public var action: Action
        /// When the host that made the change published it (unix milliseconds, its clock).
        public var atMillis: Int64?
        /// The stream entry's id, for reading on from it.
        public var entry: String
    }

    /// Records a change in the stream and tells every listening gate.
    public static func publish(_ c: RedisConnection, id: String, action: Action) throws(RedisError) {
        let now = Timestamp.nowMillis()
        let minID = String(now - replayMillis)
        let replies = try c.pipeline([
            ["XADD", changes, "MINID", "~", minID, "*", "id", id, "action", action.rawValue, "at", String(now)],
            ["PUBLISH", channel(c.address), "\(action.rawValue) \(id) \(now)"],
        ])
        for r in replies { if case .error(let e) = r { throw RedisError("publish: \(e)") } }
    }

    /// Changes after stream entry `after` (nil: those of the last day), oldest first.
    public static func changes(_ c: RedisConnection, after: String?) throws(RedisError) -> [Change] {
        let start = after.map { "(" + $0 } ?? String(Timestamp.nowMillis() - replayMillis)
        let reply = try c.command(["XRANGE", changes, start, "+", "COUNT", "100000"])
        if case .error(let e) = reply { throw RedisError("XRANGE: \(e)") }
        var out: [Change] = []
        for item in reply.items {
            let pair = item.items
            guard pair.count == 2, let entry = pair[0].text else { continue }
            let fields = pair[1].items.compactMap(\.text)
            var id: String?
            var action: Action?
            var at: Int64?
            var i = 0
            while i + 1 < fields.count {
                if fields[i] == "id" { id = fields[i + 1] }
                if fields[i] == "action" { action = Action(rawValue: fields[i + 1]) }
                if fields[i] == "at" { at = Int64(fields[i + 1]) }
                i += 2
            }
            if let id, let action { out.append(Change(id: id, action: action, atMillis: at, entry: entry)) }
        }
        return out
    }

    /// A channel message `"<action> <id> <unix ms>"` (or `"<action> <id>"`, without the time).
    public static func parseMessage(_ v: RedisValue) -> (id: String, action: Action, atMillis: Int64?)? {
        let parts = v.items
        guard parts.count == 3, parts[0].text == "message", let text = parts[2].text else { return nil }
        let words = text.split(separator: " ")
        guard words.count == 2 || words.count == 3, let action = Action(rawValue: String(words[0])) else { return nil }
        let at = words.count == 3 ? Int64(words[2]) : nil
        if words.count == 3 && at == nil { return nil }
        return (String(words[1]), action, at)
    }

    /// The fleet's latest use of every key, unix seconds.
    public static func lastUse(_ c: RedisConnection) throws(RedisError) -> [String: Int64] {
        let reply = try c.command(["HGETALL", lastUsed])
        if case .error(let e) = reply { throw RedisError("HGETALL: \(e)") }
        return reply.numbersByName(in: 0...Timestamp.latestSeconds)
    }

    /// Requests counted against a key's quota in the current period, by the whole fleet.
    public static func quotaUsed(_ c: RedisConnection, id: String, period: QuotaText.Period, wallSeconds: Int64) throws(RedisError) -> Int64 {
        let reply = try c.command(["HGET", quota(KeyStateFile.periodLabel(period, wallSeconds)), id])
        if case .error(let e) = reply { throw RedisError("HGET: \(e)") }
        return reply.text.flatMap { Int64($0) }.map { countRange.contains($0) ? $0 : 0 } ?? 0
    }
}

/// The CLI's and the console's side of the fleet: short-lived connections, one-line answers.
public enum FleetClient {
    static let timeoutMillis = 500

    /// Tells every gate of the fleet about a change already written to the key store. Returns
    /// a warning to show when it could not (the change then reaches the other gates with
    /// their copy of the store).
    public static func push(_ policy: Policy, id: String, action: FleetStore.Action) -> String? {
        guard let cluster = policy.cluster else { return nil }
        do {
            let c = try RedisConnection(cluster.redis, timeoutMillis: timeoutMillis)
            try FleetStore.publish(c, id: id, action: action)
            return nil
        } catch {
            return "the change is in the key store, but other gates were not told (\(error)); they apply it when their copy of the store changes"
        }
    }

    /// The fleet's latest use of each key (unix seconds), or nil without a cluster or Redis.
    public static func lastUse(_ policy: Policy) -> [String: Int64]? {
        guard let cluster = policy.cluster, let c = try? RedisConnection(cluster.redis, timeoutMillis: timeoutMillis) else { return nil }
        return try? FleetStore.lastUse(c)
    }

    /// The fleet's count against a key's quota this period, or nil without a cluster or Redis.
    public static func quotaUsed(_ policy: Policy, id: String, period: QuotaText.Period) -> Int64? {
        guard let cluster = policy.cluster, let c = try? RedisConnection(cluster.redis, timeoutMillis: timeoutMillis) else { return nil }
        return try? FleetStore.quotaUsed(c, id: id, period: period, wallSeconds: Timestamp.nowSeconds())
    }
}

/// What gates have observed about keys, from everywhere it is kept: the state file in
/// `state_dir`, what a running gate knows itself (`live`), and with `cluster` the fleet's Redis.
/// The CLI and the console read it the same way.
public enum KeyObservations {
    /// The latest use of each key, unix seconds.
    public static func lastUse(_ policy: Policy, live: [String: Int64] = [:]) -> [String: Int64] {
        var seconds = KeyStateFile.read(KeyStateFile.path(for: policy)).lastUsed
        seconds.merge(live) { max($0, $1) }
        if let fleet = FleetClient.lastUse(policy) { seconds.merge(fleet) { max($0, $1) } }
        return seconds
    }

    /// Requests counted against a key's quota in the current period, and what is left; nil for
    /// a key without a quota.
    public static func quota(_ r: KeyRecord, _ policy: Policy, live: Int64 = 0) -> (used: Int64, remaining: Int64)? {
        guard let q = r.quota.flatMap(QuotaText.parse) else { return nil }
        let now = Timestamp.nowSeconds()
        var used = live
        if let saved = KeyStateFile.read(KeyStateFile.path(for: policy)).quota[r.id], saved.period == KeyStateFile.periodLabel(q.period, now) {
            used = max(used, saved.used)
        }
        if let fleet = FleetClient.quotaUsed(policy, id: r.id, period: q.period) { used = max(used, fleet) }
        return (used, max(0, Int64(q.count) - used))
    }
}
