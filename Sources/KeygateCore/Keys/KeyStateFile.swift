import FoundationEssentials
import Glibc

/// `keys.state.json` beside the store: what gates observe about keys — last use, and requests
/// counted against each quota in its current period — merged by every gate that shares the
/// store, read by the CLI.
///
/// ```
/// {"last_used": {"ID": "2026-11-23T18:00:00Z"}, "quota_used": {"ID": {"period": "2026-11-23", "used": 42}}}
/// ```
/// Merging keeps the latest time and, within one period, the highest count, so a restart or a
/// second gate never moves either backwards.
public enum KeyStateFile {
    public struct QuotaUse: Equatable, Sendable {
        /// `2026-11-23` for a daily quota, `2026-11` for a monthly one.
        public var period: String
        public var used: Int64
        public init(period: String, used: Int64) {
            self.period = period
            self.used = used
        }
    }

    public struct State: Sendable, Equatable {
        public var lastUsed: [String: Int64] = [:]
        public var quota: [String: QuotaUse] = [:]
        public init() {}
    }

    /// In `state_dir`: beside the key store unless the policy names another folder (so the
    /// store can be mounted read-only).
    public static func path(for policy: Policy) -> String {
        PathText.join(policy.stateDir, "keys.state.json")
    }

    /// The file's state; a file that is missing reads as empty.
    public static func read(_ path: String) -> State { (try? load(path)) ?? State() }

    /// The file's state, or an error when it exists but does not parse. Counts outside what a
    /// quota can hold are clamped, so a hand-edited file cannot trap the limiter.
    public static func load(_ path: String) throws(LoadError) -> State {
        guard let data = FileManager.default.contents(atPath: path) else { return State() }
        guard let state = parse(data) else { throw LoadError("\(path): not a JSON object") }
        return state
    }

    /// The state `data` holds, or nil when it is not a JSON object. Entries of the wrong shape
    /// are left out.
    public static func parse(_ data: some Collection<UInt8>) -> State? {
        guard let object = JSONValue.parseObject(data) else { return nil }
        var state = State()
        for (id, ts) in object["last_used"]?.object ?? [:] {
            // Before 1970 is no time a gate records; left out, as Redis's are.
            if let ts = ts.string, let ms = Timestamp.parseMillis(ts), ms >= 0 { state.lastUsed[id] = ms / 1000 }
        }
        for (id, q) in object["quota_used"]?.object ?? [:] {
            if let period = q.object?["period"]?.string, let number = q.object?["used"]?.number {
                let used = number.isFinite ? min(max(number, 0), Double(Bounds.quotaCount)) : 0
                state.quota[id] = QuotaUse(period: period, used: Int64(used))
            }
        }
        return state
    }

    /// Moves a state file that does not parse aside (`.corrupt-<unix seconds>`), so the next
    /// write starts a new one without destroying what an operator may want to repair. Returns
    /// the new name.
    public static func setAside(_ path: String) -> String? {
        let aside = "\(path).corrupt-\(Timestamp.nowSeconds())"
        return rename(path, aside) == 0 ? aside : nil
    }

    /// The label of the period `wallSeconds` falls in.
    public static func periodLabel(_ p: QuotaText.Period, _ wallSeconds: Int64) -> String {
        let stamp = Timestamp.format(seconds: wallSeconds)
        return String(stamp.prefix(p == .day ? 10 : 7))
    }

    /// Merges `seen` into the file under its lock and replaces it atomically.
    public static func merge(_ seen: State, into path: String) throws {
        guard !seen.lastUsed.isEmpty || !seen.quota.isEmpty else { return }
        let lock = try KeyStoreLock(storePath: path)
        defer { withExtendedLifetime(lock) {} }
        var base = State()
        var problem: LoadError?
        do {
            base = try load(path)
        } catch {
            // Never silently replaced: kept aside and reported, then a new file is started.
            let aside = setAside(path)
            problem = LoadError("\(error); kept as \(aside ?? "(could not be renamed)") and started anew")
        }
        try write(combine(seen, with: base), to: path)
        if let problem { throw problem }
    }

    /// The latest time and, within one period, the highest count of each key.
    public static func combine(_ seen: State, with base: State) -> State {
        var merged = base
        for (id, t) in seen.lastUsed where t > (merged.lastUsed[id] ?? 0) { merged.lastUsed[id] = t }
        for (id, q) in seen.quota {
            // Labels (2026-11-23, 2026-11) sort as time does: a gate still in the old period
            // for a moment never writes over the new one's count.
            if let old = merged.quota[id], old.period > q.period || (old.period == q.period && old.used >= q.used) { continue }
            merged.quota[id] = q
        }
        return merged
    }

    static func write(_ merged: State, to path: String) throws {
        try KeyStoreFile.writeAtomically(render(merged), to: path, mode: 0o600)
    }

    /// The file's text: indented JSON with sorted keys, every name and period escaped as JSON
    /// requires (a hand-edited file may hold any string).
    public static func render(_ state: State) -> [UInt8] {
        let object: JSONValue = [
            "last_used": .object(state.lastUsed.mapValues { JSONValue(Timestamp.format(seconds: $0)) }),
            "quota_used": .object(state.quota.mapValues { ["period": JSONValue($0.period), "used": JSONValue(Int($0.used))] }),
        ]
        return (object.encoded(pretty: true) ?? []) + [0x0A]
    }
}
