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

    public struct State: Sendable {
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
        var state = State()
        guard let data = FileManager.default.contents(atPath: path) else { return state }
        guard let object = JSONValue.parseObject(data) else {
            throw LoadError("\(path): not a JSON object")
        }
        for (id, ts) in object["last_used"]?.object ?? [:] {
            if let ts = ts.string, let ms = Timestamp.parseMillis(ts) { state.lastUsed[id] = ms / 1000 }
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
    static func combine(_ seen: State, with base: State) -> State {
        var merged = base
        for (id, t) in seen.lastUsed where t > (merged.lastUsed[id] ?? 0) { merged.lastUsed[id] = t }
        for (id, q) in seen.quota {
            if let old = merged.quota[id], old.period == q.period, old.used >= q.used { continue }
            merged.quota[id] = q
        }
        return merged
    }

    static func write(_ merged: State, to path: String) throws {
        var text = "{\n  \"last_used\": {"
        text += merged.lastUsed.keys.sorted().map { "\n    \"\($0)\": \"\(Timestamp.format(seconds: merged.lastUsed[$0]!))\"" }.joined(separator: ",")
        text += "\n  },\n  \"quota_used\": {"
        text += merged.quota.keys.sorted().map { id in
            let q = merged.quota[id]!
            return "\n    \"\(id)\": {\"period\": \"\(q.period)\", \"used\": \(q.used)}"
        }.joined(separator: ",")
        text += "\n  }\n}\n"
        try KeyStoreFile.writeAtomically(Array(text.utf8), to: path, mode: 0o600)
    }
}
