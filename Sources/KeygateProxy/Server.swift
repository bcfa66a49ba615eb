import Dispatch
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateIO
import Synchronization

/// The running gate: event loops, the shared listener, the admin endpoint, reloads, signals
/// and graceful drain.
public final class Server: @unchecked Sendable {
    static let poolIdleMillis: Int64 = 30_000
    static let maxPoolPerLoop = 256

    public let log: OpsLog
    let policyPath: String
    let usageLog: UsageLog
    let upstreamAddress: SocketAddress
    private(set) var loops: [EventLoop] = []
    private(set) var contexts: [LoopContext] = []
    private var listenFD: Int32 = -1
    public private(set) var listenPort: UInt16 = 0
    private var admin: AdminServer?
    private var console: ConsoleServer?
    let openConnections = Atomic<Int>(0)
    let maxConnections: Int
    let maxPerIP: Int
    private let perIP = Mutex<[IPAddress: Int]>([:])
    let reloads = Reloads()
    private var signalSources: [DispatchSourceSignal] = []
    let control = DispatchQueue(label: "keygate.control")
    private var current: Snapshot
    /// What the process started with: settings read only at start keep these values.
    private let startedWith: Snapshot
    private var watcher: StoreWatcher?
    private var stateFlusher: KeyStateFlusher?
    /// Shared limits and pushed key changes (`cluster`); nil = this gate alone.
    private(set) var fleetSync: FleetSync?
    /// Key changes pushed by other hosts, by key id: applied to every snapshot installed,
    /// until an `enable` lifts a disable.
    private let pushed = Mutex<[String: PushedChange]>([:])
    /// Per-key hourly and daily counts for the console; nil without a console.
    let rollups: UsageRollups?
    private var rollupTimer: DispatchSourceTimer?
    private let done = DispatchSemaphore(value: 0)
    private var draining = false

    /// Loads everything `serve` needs and fails with a readable reason if anything is wrong.
    public init(policyPath: String, log: OpsLog) throws {
        // A reader of `usage_log: "-"` or a client that goes away must cost a write error
        // (counted), never the process.
        signal(SIGPIPE, SIG_IGN)
        self.log = log
        self.policyPath = policyPath
        let snapshot = try SnapshotLoader.load(policyPath: policyPath)
        if let problem = KeyStateFlusher.restore(into: snapshot) {
            log.error("key state: \(problem); quota counts start from this gate's own")
        }
        current = snapshot
        startedWith = snapshot
        published = Mutex(snapshot)
        let policy = snapshot.policy
        guard let upstream = SocketAddress.resolve(host: policy.upstream.host, port: policy.upstream.port) else {
            throw ServeError("upstream \(policy.upstream): cannot resolve \(policy.upstream.host)")
        }
        upstreamAddress = upstream
        if let u = policy.upstreamTLS {
            do {
                upstreamTLS = try TLSClientContext(ca: u.ca, serverName: u.serverName, verify: u.verify)
            } catch {
                throw ServeError("upstream_tls: \(error)")
            }
            if !u.verify {
                log.warning("upstream_tls.verify is false: the upstream's certificate is not checked, so anyone on the path can stand in for it")
            }
        }
        if let t = policy.tls {
            do {
                tlsContext = try Self.buildTLS(t)
            } catch {
                throw ServeError("tls: \(error)")
            }
            tlsStamps = Self.stamps(t)
        }
        rollups = policy.console != nil ? UsageRollups(path: UsageRollups.path(for: policy)) : nil
        maxConnections = policy.limits.maxConnections
        maxPerIP = policy.limits.maxConnectionsPerIP
        do {
            usageLog = try UsageLog(path: policy.usageLog)
        } catch {
            throw ServeError("\(error)")
        }
    }

    /// The live snapshot for readers off the control queue (admin, metrics): a reload in
    /// progress never makes them wait.
    private let published: Mutex<Snapshot>
    public var snapshot: Snapshot { published.withLock { $0 } }
    private let drainingState = Atomic<Bool>(false)
    /// TLS to the upstream, when `upstream` is https://.
    private(set) var upstreamTLS: TLSClientContext?
    /// The certificates new TLS connections get; replaced whole when their files change.
    private(set) var tlsContext: TLSServerContext?
    /// File stamps of the certificates and keys last tried, so a bad file is reported once.
    private var tlsStamps: [FileStamp?] = []
    private var tlsWatch: DispatchSourceTimer?
    let tlsReloads = Reloads()
    /// The current certificates' names and expiry, for /metrics.
    let tlsCertificates = Mutex<[TLSServerContext.Certificate]>([])
    var isDraining: Bool { drainingState.load(ordering: .relaxed) }

    /// Binds the sockets and starts the loops. Returns once the gate is accepting.
    public func start() throws {
        let policy = current.policy
        // Before the port opens: whoever sees the gate listening can already read the warning.
        if !policy.credentialQuery.isEmpty {
            log.warning(
                "credentials.query is set (\(policy.credentialQuery.joined(separator: ", "))): keys in URLs end up in browser histories and other servers' logs; keygate strips them before forwarding and never logs them")
        }
        Self.raiseDescriptorLimit(to: policy.limits.maxConnections * 2 + 1024)
        guard let address = SocketAddress(host: policy.listen.host, port: policy.listen.port) else {
            throw ServeError("listen \(policy.listen) is not a numeric address")
        }
        listenFD = try Sockets.listen(address)
        listenPort = Sockets.localPort(listenFD)
        let bootID = Array(KeyFormat.newID().utf8)
        if let cluster = policy.cluster {
            // Connected (or known down) before the first request, so it is decided in the right mode.
            let sync = FleetSync(server: self, settings: cluster)
            fleetSync = sync
            sync.start()
        }
        for i in 0..<policy.workerCount {
            let loop = try EventLoop(index: i)
            let ctx = LoopContext(loop: loop, server: self, snapshot: current, bootID: bootID)
            ctx.tls = tlsContext
            if rollups != nil { ctx.rollup = RollupBatch() }
            loop.addTickHandler { _ in ctx.tick() }
            loops.append(loop)
            contexts.append(ctx)
            let listener = Listener(fd: listenFD, ctx: ctx)
            do {
                try loop.registerFromOutside(listenFD, listener, interest: Events.readable | Events.exclusive)
            } catch {
                // A loop that cannot hear its listener would never accept: stop start-up instead.
                throw ServeError("listen \(policy.listen): loop \(i): \(error)")
            }
        }
        // Started once `contexts` is whole: every loop's listener reads it to place connections.
        for loop in loops { loop.start() }
        if let adminAddress = policy.adminListen {
            admin = try AdminServer(server: self, endpoint: adminAddress)
        }
        if let c = policy.console {
            console = try ConsoleServer(server: self, settings: c)
            if !FileManager.default.fileExists(atPath: c.usersFile) {
                log.warning("console: no users yet; add one with `keygate console-users add NAME --role admin` (password on stdin)")
            }
        }
        watcher = StoreWatcher(server: self)
        watcher?.start()
        stateFlusher = KeyStateFlusher(server: self)
        stateFlusher?.start()
        installSignals()
        if let tls = tlsContext {
            publishTLS(tls)
            startTLSWatch()
        }
        if rollups != nil {
            let t = DispatchSource.makeTimerSource(queue: control)
            t.schedule(deadline: .now() + .seconds(60), repeating: .seconds(60), leeway: .seconds(5))
            t.setEventHandler { [weak self] in self?.saveRollups() }
            t.resume()
            rollupTimer = t
        }
        // Start-up's garbage (the policy's parse, the key load, the GeoIP check) is free by now;
        // the control queue does it so the first requests never wait on it.
        control.async { Sys.releaseFreeMemory() }
        log.info(
            "keygate listening on \(policy.listen.host):\(listenPort), upstream \(policy.upstream), \(loops.count) loops, \(current.keyCount) keys"
                + (admin.map { ", admin on \($0.endpoint)" } ?? "") + (console.map { ", console on \($0.scheme)://\($0.endpoint)" } ?? ""))
    }

    /// Each client may need two descriptors (itself and its upstream): ask for enough.
    static func raiseDescriptorLimit(to wanted: Int) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let target = min(rlim_t(wanted), limit.rlim_max)
        if limit.rlim_cur < target {
            limit.rlim_cur = target
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }

    /// Blocks until a drain has finished.
    public func wait() {
        done.wait()
    }

    // MARK: connections

    /// Counts a new client connection against the global cap and, when set, the per-address
    /// cap. The per-address table is shared by the loops behind a mutex: taken once per
    /// connection at accept and close, never per request.
    func admitConnection(from peer: IPAddress) -> Bool {
        if openConnections.add(1, ordering: .relaxed).newValue > maxConnections {
            openConnections.subtract(1, ordering: .relaxed)
            return false
        }
        if maxPerIP > 0 {
            let admitted = perIP.withLock { table -> Bool in
                let n = table[peer, default: 0]
                if n >= maxPerIP { return false }
                table[peer] = n + 1
                return true
            }
            if !admitted {
                openConnections.subtract(1, ordering: .relaxed)
                return false
            }
        }
        return true
    }

    /// The loop a new connection accepted on `own` goes to, counted there in `placed`: `own`,
    /// unless another loop has two fewer clients. The listener wakes whichever loop waits in
    /// epoll first, and a loop busy relaying tunnels is usually that one; left alone, 64 tunnels
    /// split 21/43 over two loops, and the lighter loop woke for every message or two.
    func place(from own: LoopContext) -> LoopContext {
        var best = own
        var fewest = own.placed.load(ordering: .relaxed) - 1
        for ctx in contexts {
            let n = ctx.placed.load(ordering: .relaxed)
            if n < fewest {
                best = ctx
                fewest = n
            }
        }
        best.placed.add(1, ordering: .relaxed)
        return best
    }

    func connectionClosed(from peer: IPAddress) {
        openConnections.subtract(1, ordering: .relaxed)
        if maxPerIP > 0 {
            perIP.withLock { table in
                let n = table[peer, default: 1] - 1
                table[peer] = n > 0 ? n : nil
            }
        }
    }

    // MARK: reload

    /// Re-reads policy, keys and GeoIP; swaps the snapshot whole, or keeps the old one.
    public func reload(reason: String, policyToo: Bool) {
        control.async { [self] in
            let started = Date()
            do {
                let next: Snapshot
                if policyToo {
                    next = try SnapshotLoader.load(policyPath: policyPath, previous: current)
                    let pending = RestartSettings.changed(from: startedWith.policy, to: next.policy)
                    if !pending.isEmpty {
                        log.warning("reload: \(pending.joined(separator: ", ")) changed; these take effect only after a restart")
                    }
                } else {
                    next = try SnapshotLoader.reloadKeys(current)
                }
                install(next)
                if policyToo { reloadTLS(reason: reason, force: true) }
                reloads.ok.add(1, ordering: .relaxed)
                log.info("reload (\(reason)): \(next.keyCount) keys in \(Int(Date().timeIntervalSince(started) * 1000)) ms")
                // The parse's garbage is free now (the old snapshot follows when the loops drop it).
                Sys.releaseFreeMemory()
            } catch {
                reloads.failed.add(1, ordering: .relaxed)
                log.error("reload (\(reason)) failed, keeping the last good configuration: \(error)")
            }
        }
    }

    /// Must run on `control`.
    func install(_ next: Snapshot) {
        // Under the same lock as `applyPushed`, so a change pushed while this snapshot was
        // built is applied either to it or before it, never lost between the two.
        pushed.withLock { changes in
            if !changes.isEmpty {
                // A change the new copy has caught up with is the copy's from now on: a later
                // change that reached this gate only with the copy (Redis was away) counts.
                let byID = next.keysByID
                for (id, change) in changes {
                    if change.stands(over: byID[id]?.record) {
                        byID[id]?.pushed.store(change.status.rawValue, ordering: .relaxed)
                    } else {
                        changes[id] = nil
                    }
                }
            }
            current = next
            published.withLock { $0 = next }
        }
        for ctx in contexts {
            ctx.loop.execute { ctx.snapshot = next }
        }
    }

    var currentSnapshotUnsafe: Snapshot { current }

    /// A key change pushed by another host: refused (or, for `enable`, no longer) from now
    /// on, before this gate's copy of the store says so. A change older than what the copy
    /// already shows (a replay after a reconnect) is passed over. Returns whether it applied to
    /// a key here.
    @discardableResult
    func applyPushed(id: String, _ change: PushedChange) -> Bool {
        pushed.withLock { changes in
            let byID = snapshot.keysByID
            let entry = byID[id]
            guard change.stands(over: entry?.record) else { return false }
            if change.status != .none, changes[id] == nil { PushedChange.makeRoom(in: &changes) { byID[$0] != nil } }
            changes[id] = change.status == .none ? nil : change
            guard let entry else { return false }
            entry.pushed.store(change.status.rawValue, ordering: .relaxed)
            return true
        }
    }

    // MARK: TLS certificates

    public static func buildTLS(_ t: Policy.TLS) throws(TLSError) -> TLSServerContext {
        let clients: TLSServerContext.ClientCertificates
        switch (t.clientCertificateMode, t.clientCA) {
        case ("optional", let ca?): clients = .optional(ca: ca)
        case ("require", let ca?): clients = .require(ca: ca)
        default: clients = .off
        }
        return try TLSServerContext(pairs: t.certificates.map { ($0.cert, $0.key) }, minTLS13: t.minTLS13, clientCertificates: clients)
    }

    /// stat() follows symlinks, so a Kubernetes-style swap of the `..data` link changes these.
    static func stamps(_ t: Policy.TLS) -> [FileStamp?] {
        t.certificates.flatMap { [FileStamp.of($0.cert), FileStamp.of($0.key)] } + [t.clientCA.flatMap(FileStamp.of)]
    }

    /// Checks the certificate files every second (off the loops) and reloads them when they
    /// change. New connections get the new pair; open ones keep theirs.
    private func startTLSWatch() {
        let t = DispatchSource.makeTimerSource(queue: control)
        t.schedule(deadline: .now() + .seconds(1), repeating: .seconds(1), leeway: .milliseconds(100))
        t.setEventHandler { [weak self] in self?.reloadTLS(reason: "certificate files changed", force: false) }
        t.resume()
        tlsWatch = t
    }

    /// Must run on `control`. A pair that does not load (garbage, a key that does not match,
    /// an expired certificate) keeps the last good one and is reported.
    func reloadTLS(reason: String, force: Bool) {
        guard let t = current.policy.tls else { return }
        let now = Self.stamps(t)
        if !force && now == tlsStamps { return }
        tlsStamps = now
        do {
            let next = try Self.buildTLS(t)
            if let expired = next.certificates.first(where: { $0.notAfter > 0 && $0.notAfter <= Timestamp.nowSeconds() }) {
                throw TLSError("the certificate for \(expired.name) has expired")
            }
            tlsContext = next
            for ctx in contexts { ctx.loop.execute { ctx.tls = next } }
            if let console, console.tls != nil { console.loop.execute { console.tls = next } }
            publishTLS(next)
            tlsReloads.ok.add(1, ordering: .relaxed)
            log.info("tls (\(reason)): \(next.certificates.map(\.name).joined(separator: ", ")) loaded")
        } catch {
            tlsReloads.failed.add(1, ordering: .relaxed)
            log.error("tls (\(reason)): \(error); keeping the certificates in use")
        }
    }

    private func publishTLS(_ tls: TLSServerContext) {
        tlsCertificates.withLock { $0 = tls.certificates }
        let soon = Timestamp.nowSeconds() + 7 * 86400
        for c in tls.certificates where c.notAfter > 0 && c.notAfter < soon {
            log.warning("tls: the certificate for \(c.name) expires \(Timestamp.format(seconds: c.notAfter)), in under 7 days")
        }
    }

    /// Runs on `control`.
    func saveRollups() {
        do {
            try rollups?.save()
        } catch {
            log.error("usage rollups: \(error)")
        }
    }

    // MARK: signals and drain

    private func installSignals() {
        for sig in [SIGHUP, SIGTERM, SIGINT, SIGUSR1] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: control)
            s.setEventHandler { [self] in
                switch sig {
                case SIGHUP: reload(reason: "SIGHUP", policyToo: true)
                case SIGUSR1:
                    usageLog.reopen()
                    log.info("usage log reopened")
                default: beginDrain()
                }
            }
            s.resume()
            signalSources.append(s)
        }
    }

    /// SIGTERM: stop accepting, let in-flight requests finish (with `Connection: close`),
    /// close idle connections, and exit at the latest after `shutdown_grace`.
    public func beginDrain() {
        control.async { [self] in
            if draining { return }
            draining = true
            drainingState.store(true, ordering: .relaxed)
            let grace = current.policy.timeouts.shutdownGrace
            log.info("draining: \(openConnections.load(ordering: .relaxed)) connections open, grace \(grace) ms")
            let fd = listenFD
            for ctx in contexts {
                ctx.loop.execute {
                    ctx.draining = true
                    ctx.loop.deregister(fd)
                    for c in ctx.clients { c.drain() }
                    for u in ctx.pool { u.close() }
                    ctx.pool.removeAll()
                }
            }
            let deadline = Date().addingTimeInterval(Double(grace) / 1000)
            pollDrain(deadline: deadline)
        }
    }

    private func pollDrain(deadline: Date) {
        if openConnections.load(ordering: .relaxed) <= 0 || Date() >= deadline {
            finish()
            return
        }
        control.asyncAfter(deadline: .now() + .milliseconds(50)) { [self] in pollDrain(deadline: deadline) }
    }

    private func finish() {
        let group = DispatchGroup()
        for ctx in contexts {
            group.enter()
            ctx.loop.execute {
                for c in ctx.clients { c.closeForShutdown() }
                ctx.usage.flush(to: self.usageLog)
                ctx.handOverRollup()
                group.leave()
            }
        }
        group.wait()
        usageLog.flush()
        fleetSync?.stop()
        stateFlusher?.flush()  // already on the control queue
        saveRollups()
        log.info("stopped: \(usageLog.written.load(ordering: .relaxed)) usage events written, \(usageLog.dropped.load(ordering: .relaxed)) dropped")
        done.signal()
    }

    // MARK: metrics

    /// Visits every loop (on its own queue) to gather its counters.
    func gatherMetrics() -> (LoopMetrics, [Int]) {
        var total = LoopMetrics()
        var clients: [Int] = []
        for ctx in contexts {
            let (m, c, pooled) = ctx.loop.sync { (ctx.metrics, ctx.clients.count, ctx.pool.count) }
            total.upstreamInUse += m.upstreamOpen - pooled
            for i in 0..<total.requests.count { total.requests[i] += m.requests[i] }
            for i in 0..<total.statusClasses.count { total.statusClasses[i] += m.statusClasses[i] }
            for i in 0..<total.durationBuckets.count {
                total.durationBuckets[i] += m.durationBuckets[i]
                total.upstreamBuckets[i] += m.upstreamBuckets[i]
            }
            total.durationSum += m.durationSum
            total.upstreamSum += m.upstreamSum
            total.upstreamCount += m.upstreamCount
            total.upstreamOpen += m.upstreamOpen
            total.tunnelsOpen += m.tunnelsOpen
            for i in 0..<total.tunnelsClosed.count { total.tunnelsClosed[i] += m.tunnelsClosed[i] }
            total.tlsHandshakes[0] += m.tlsHandshakes[0]
            total.tlsHandshakes[1] += m.tlsHandshakes[1]
            for i in 0..<total.timeouts.count { total.timeouts[i] += m.timeouts[i] }
            total.requestBufferBytes += m.requestBufferBytes
            total.requestBufferFull += m.requestBufferFull
            clients.append(c)
        }
        return (total, clients)
    }
}

final class Reloads: Sendable {
    let ok = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
}

public struct ServeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Settings read once at start: a reload that changes one is applied to everything else and
/// warned about, and the old value stays in force until a restart.
enum RestartSettings {
    static func changed(from a: Policy, to b: Policy) -> [String] {
        var out: [String] = []
        if a.listen != b.listen { out.append("listen") }
        if a.upstream != b.upstream { out.append("upstream") }
        // The upstream's TLS context (CA, name, verification) is built once, with the pool.
        if a.upstreamTLS != b.upstreamTLS { out.append("upstream_tls") }
        if a.adminListen != b.adminListen { out.append("admin_listen") }
        if a.console?.listen != b.console?.listen { out.append("console.listen") }
        // The console's sessions and listener, and the fleet's sync thread, keep the settings
        // they were made with; only the console's users_file is read on every request.
        if a.console?.sessionTTLMillis != b.console?.sessionTTLMillis { out.append("console.session_ttl") }
        if a.console?.tls != b.console?.tls { out.append("console.tls") }
        if (a.cluster == nil) != (b.cluster == nil) || a.cluster?.redis != b.cluster?.redis { out.append("cluster") }
        if let x = a.cluster, let y = b.cluster {
            if x.syncIntervalMillis != y.syncIntervalMillis { out.append("cluster.sync_interval") }
            if x.denyWhenDown != y.denyWhenDown { out.append("cluster.on_redis_down") }
        }
        if a.workers != b.workers { out.append("workers") }
        if a.keysFile != b.keysFile { out.append("keys_file") }
        if a.usageLog != b.usageLog { out.append("usage_log") }
        if a.limits.maxConnections != b.limits.maxConnections { out.append("limits.max_connections") }
        if a.limits.maxConnectionsPerIP != b.limits.maxConnectionsPerIP { out.append("limits.max_connections_per_ip") }
        if (a.tls == nil) != (b.tls == nil) { out.append("tls (on or off)") }
        return out
    }
}
