import Foundation

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

    public static func path(for policy: Policy) -> String {
        ((policy.keysFile as NSString).deletingLastPathComponent as NSString).appendingPathComponent("keys.state.json")
    }

    public static func read(_ path: String) -> State {
        var state = State()
        guard let data = FileManager.default.contents(atPath: path),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return state }
        for (id, ts) in object["last_used"] as? [String: String] ?? [:] {
            if let ms = Timestamp.parseMillis(ts) { state.lastUsed[id] = ms / 1000 }
        }
        for (id, q) in object["quota_used"] as? [String: [String: Any]] ?? [:] {
            if let period = q["period"] as? String, let used = (q["used"] as? NSNumber)?.int64Value {
                state.quota[id] = QuotaUse(period: period, used: used)
            }
        }
        return state
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
        var merged = read(path)
        for (id, t) in seen.lastUsed where t > (merged.lastUsed[id] ?? 0) { merged.lastUsed[id] = t }
        for (id, q) in seen.quota {
            if let old = merged.quota[id], old.period == q.period, old.used >= q.used { continue }
            merged.quota[id] = q
        }
        var text = "{\n  \"last_used\": {"
        text += merged.lastUsed.keys.sorted().map { "\n    \"\($0)\": \"\(Timestamp.format(seconds: merged.lastUsed[$0]!))\"" }.joined(separator: ",")
        text += "\n  },\n  \"quota_used\": {"
        text += merged.quota.keys.sorted().map { id in
            let q = merged.quota[id]!
            return "\n    \"\(id)\": {\"period\": \"\(q.period)\", \"used\": \(q.used)}"
        }.joined(separator: ",")
        text += "\n  }\n}\n"
        try KeyStoreFile.writeAtomically(Array(text.utf8), to: path, mode: 0o600)
        withExtendedLifetime(lock) {}
    }
}
