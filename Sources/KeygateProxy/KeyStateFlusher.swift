import Dispatch
import KeygateCore

/// Every few seconds, writes the keys' last-use times and quota counts to `keys.state.json`
/// (off the loops), so `keygate keys list/show` see them and quotas survive a restart.
final class KeyStateFlusher {
    static let intervalSeconds = 5
    unowned let server: Server
    private var timer: DispatchSourceTimer?
    /// What was last written, to write only what changed.
    private var written = KeyStateFile.State()

    init(server: Server) { self.server = server }

    func start() {
        let t = DispatchSource.makeTimerSource(queue: server.control)
        t.schedule(deadline: .now() + .seconds(Self.intervalSeconds), repeating: .seconds(Self.intervalSeconds), leeway: .milliseconds(500))
        t.setEventHandler { [unowned self] in flush() }
        t.resume()
        timer = t
    }

    /// Seeds quota counters from the file, for the periods still running. Runs before serving.
    /// Returns a problem to report when the file exists but does not parse (it is then set
    /// aside, never overwritten).
    static func restore(into snapshot: Snapshot) -> String? {
        let path = KeyStateFile.path(for: snapshot.policy)
        let state: KeyStateFile.State
        do {
            state = try KeyStateFile.load(path)
        } catch {
            let aside = KeyStateFile.setAside(path)
            return "\(error); kept as \(aside ?? "(could not be renamed)")"
        }
        let now = Timestamp.nowSeconds()
        for entry in snapshot.keys.values {
            guard let limiter = entry.limiter, let period = limiter.quotaPeriod, let saved = state.quota[entry.record.id] else { continue }
            if saved.period == KeyStateFile.periodLabel(period, now) {
                limiter.restore(periodIndex: KeyLimiter.periodIndex(period, now), count: saved.used)
            }
        }
        return nil
    }

    /// Runs on the control queue.
    func flush() {
        let snapshot = server.currentSnapshotUnsafe
        let now = Timestamp.nowSeconds()
        var changed = KeyStateFile.State()
        for entry in snapshot.keys.values {
            let id = entry.record.id
            let t = entry.lastUsed
            if t > 0 && written.lastUsed[id] != t { changed.lastUsed[id] = t }
            if let limiter = entry.limiter, let period = limiter.quotaPeriod {
                let use = KeyStateFile.QuotaUse(period: KeyStateFile.periodLabel(period, now), used: Int64(limiter.usedInPeriod(wallSeconds: now)))
                if use.used > 0 && written.quota[id] != use { changed.quota[id] = use }
            }
        }
        guard !changed.lastUsed.isEmpty || !changed.quota.isEmpty else { return }
        do {
            try KeyStateFile.merge(changed, into: KeyStateFile.path(for: snapshot.policy))
            written.lastUsed.merge(changed.lastUsed) { _, new in new }
            written.quota.merge(changed.quota) { _, new in new }
        } catch {
            server.log.error("key state: \(error)")
            // Everything is written again next time, so a file started anew holds all counts.
            written = KeyStateFile.State()
        }
    }
}
