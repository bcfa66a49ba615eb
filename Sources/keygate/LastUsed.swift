import Foundation
import KeygateCluster
import KeygateCore

/// The gates' observations of keys (last use, quota counts), formatted for output: from the
/// state file, and with `cluster` from the fleet's Redis as well (the later time wins).
enum LastUsedFile {
    static func read(for policy: Policy) -> [String: String] {
        var seconds = KeyStateFile.read(KeyStateFile.path(for: policy)).lastUsed
        if let fleet = FleetClient.lastUse(policy) {
            seconds.merge(fleet) { max($0, $1) }
        }
        return seconds.mapValues { Timestamp.format(seconds: $0) }
    }

    /// "used N of M this day/month" for a key with a quota.
    static func quota(for r: KeyRecord, policy: Policy) -> (used: Int64, remaining: Int64)? {
        guard let q = r.quota.flatMap(QuotaText.parse) else { return nil }
        let now = Timestamp.nowSeconds()
        let saved = KeyStateFile.read(KeyStateFile.path(for: policy)).quota[r.id]
        var used = saved?.period == KeyStateFile.periodLabel(q.period, now) ? saved!.used : 0
        if let fleet = FleetClient.quotaUsed(policy, id: r.id, period: q.period) { used = max(used, fleet) }
        return (used, max(0, Int64(q.count) - used))
    }
}

/// After a change to a key's standing: tells the fleet, or says on stderr why it could not.
func pushToFleet(_ policy: Policy, id: String, _ action: FleetStore.Action) {
    if let warning = FleetClient.push(policy, id: id, action: action) {
        FileHandle.standardError.write(Data("keygate: warning: \(warning)\n".utf8))
    }
}
