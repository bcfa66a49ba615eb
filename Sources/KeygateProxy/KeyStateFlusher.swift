import Dispatch
import KeygateCore

/// Every few seconds, writes the keys' last-use times to `keys.state.json` (off the loops), so
/// `keygate keys list` shows them across restarts.
final class KeyStateFlusher {
    static let intervalSeconds = 5
    unowned let server: Server
    private var timer: DispatchSourceTimer?
    /// What was last written, to write only what changed.
    private var written: [String: Int64] = [:]

    init(server: Server) { self.server = server }

    func start() {
        let t = DispatchSource.makeTimerSource(queue: server.control)
        t.schedule(deadline: .now() + .seconds(Self.intervalSeconds), repeating: .seconds(Self.intervalSeconds), leeway: .milliseconds(500))
        t.setEventHandler { [unowned self] in flush() }
        t.resume()
        timer = t
    }

    /// Runs on the control queue.
    func flush() {
        let snapshot = server.currentSnapshotUnsafe
        var changed: [String: Int64] = [:]
        for entry in snapshot.keys.values {
            let t = entry.lastUsed.load(ordering: .relaxed)
            if t > 0 && written[entry.record.id] != t { changed[entry.record.id] = t }
        }
        guard !changed.isEmpty else { return }
        do {
            try KeyStateFile.merge(changed, into: KeyStateFile.path(for: snapshot.policy))
            written.merge(changed) { _, new in new }
        } catch {
            server.log.warning("cannot write key state: \(error)")
        }
    }
}
