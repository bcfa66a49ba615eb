import Foundation
import KeygateCore

/// The gate's observations of keys (last use, quota counts), formatted for output.
enum LastUsedFile {
    static func read(for policy: Policy) -> [String: String] {
        KeyStateFile.read(KeyStateFile.path(for: policy)).lastUsed.mapValues { Timestamp.format(seconds: $0) }
    }

    /// "used N of M this day/month" for a key with a quota.
    static func quota(for r: KeyRecord, policy: Policy) -> (used: Int64, remaining: Int64)? {
        guard let q = r.quota.flatMap(QuotaText.parse) else { return nil }
        let now = Timestamp.nowSeconds()
        let saved = KeyStateFile.read(KeyStateFile.path(for: policy)).quota[r.id]
        let used = saved?.period == KeyStateFile.periodLabel(q.period, now) ? saved!.used : 0
        return (used, max(0, Int64(q.count) - used))
    }
}
