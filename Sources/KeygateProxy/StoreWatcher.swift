import Dispatch
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateIO

/// Notices changes to the key store and the GeoIP database. An inotify watch on the store's
/// folder reacts at once (the CLI replaces the file by rename, which only the folder
/// sees); a 250 ms stat check backs it up, so a change is live within a second either way.
final class StoreWatcher {
    unowned let server: Server
    private var watches: [FolderWatch] = []
    private var timer: DispatchSourceTimer?
    private var pending = false

    init(server: Server) { self.server = server }

    func start() {
        let snapshot = server.currentSnapshotUnsafe
        var folders = Set([PathText.directory(of: snapshot.policy.keysFile)])
        if let geo = snapshot.policy.geoipDB { folders.insert(PathText.directory(of: geo)) }
        for folder in folders {
            if let w = FolderWatch(folder: folder, queue: server.control, onChange: { [unowned self] in self.check() }) {
                watches.append(w)
            } else {
                server.log.warning("cannot watch \(folder); relying on the 250 ms check")
            }
        }
        let t = DispatchSource.makeTimerSource(queue: server.control)
        t.schedule(deadline: .now() + .milliseconds(250), repeating: .milliseconds(250), leeway: .milliseconds(50))
        t.setEventHandler { [unowned self] in self.check() }
        t.resume()
        timer = t
    }

    /// Runs on the control queue.
    private func check() {
        let s = server.currentSnapshotUnsafe
        let keysChanged = FileStamp.of(s.policy.keysFile) != s.keysStamp
        let geoChanged = s.policy.geoipDB.map { FileStamp.of($0) != s.geoipStamp } ?? false
        guard keysChanged || geoChanged else {
            failedStamp = nil
            return
        }
        // A file that failed to load is not retried until it changes again.
        let stamp = (FileStamp.of(s.policy.keysFile), s.policy.geoipDB.flatMap { FileStamp.of($0) })
        if let f = failedStamp, f.0 == stamp.0, f.1 == stamp.1 { return }
        let started = EventLoop.monotonicMillis()
        do {
            let next = try SnapshotLoader.reloadKeys(s)
            server.install(next)
            server.reloads.ok.add(1, ordering: .relaxed)
            failedStamp = nil
            server.log.info(
                "reload (\(keysChanged ? "key store" : "GeoIP database") changed): \(next.keyCount) keys in \(EventLoop.monotonicMillis() - started) ms")
        } catch {
            failedStamp = stamp
            server.reloads.failed.add(1, ordering: .relaxed)
            server.log.error("reload failed, keeping the last good keys: \(error)")
        }
    }

    private var failedStamp: (FileStamp?, FileStamp?)?
}
