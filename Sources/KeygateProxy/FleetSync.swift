import Dispatch
import FoundationEssentials
import Glibc
import KeygateCluster
import KeygateCore
import KeygateIO
import Synchronization

/// The gate's side of `cluster`: one thread of its own, never an event loop, that every
/// `sync_interval` pushes this gate's counts to Redis and pulls the fleet's, and in between
/// listens for pushed key changes. Requests are decided from local state only; this thread
/// moves that state towards the fleet's. Every Redis call has a short timeout, and a broken
/// connection is retried with backoff while the gate runs on as `on_redis_down` says.
final class FleetSync: @unchecked Sendable {
    static let timeoutMillis = 250
    static let maxBackoffMillis: Int64 = 5_000

    unowned let server: Server
    let settings: Policy.Cluster
    /// 1 while both connections are up.
    let up = Atomic<Int>(0)
    /// Sync round trips by duration (`Metrics.bucketBounds`), and their sum in microseconds.
    let syncTimes = Mutex<(buckets: [Int], micros: Int)>(([Int](repeating: 0, count: Metrics.bucketBounds.count + 1), 0))
    let syncFailures = Atomic<Int>(0)

    private let stopping = Atomic<Bool>(false)
    private let stopped = DispatchSemaphore(value: 0)
    // Owned by the sync thread.
    private var commands: RedisConnection?
    private var listener: RedisConnection?
    private var backoff: Int64 = 100
    private var nextAttempt: Int64 = 0
    private var nextSync: Int64 = 0
    private var nextLastUse: Int64 = 0
    private var lastError = ""
    /// The fleet's running rate totals as last seen, to tell others' requests from ours.
    private var rateSeen: [String: Int64] = [:]
    private var lastUseSent: [String: Int64] = [:]
    /// The last pushed change read from the stream.
    private var changesSeen: String?
    /// The keys with limits in the snapshot last synced, found once per snapshot.
    /// Held, not identified by address: a freed snapshot's address can come back.
    private var limited: (snapshot: Snapshot, keys: [String: KeyLimiter])?

    init(server: Server, settings: Policy.Cluster) {
        self.server = server
        self.settings = settings
    }

    /// Connects once before the gate accepts (so it starts in the right mode), then runs.
    func start() {
        connect()
        DetachedThread.start(name: "keygate-fleet") { [self] in run() }
    }

    /// Pushes what is still counted here and stops the thread (at the end of a drain).
    func stop() {
        stopping.store(true, ordering: .relaxed)
        _ = stopped.wait(timeout: .now() + .milliseconds(Int(settings.syncIntervalMillis) + 2 * Self.timeoutMillis + 100))
    }

    private func run() {
        while !stopping.load(ordering: .relaxed) {
            let now = EventLoop.monotonicMillis()
            if commands == nil {
                if now >= nextAttempt { connect() }
                if commands == nil {
                    usleep(useconds_t(min(max(nextAttempt - EventLoop.monotonicMillis(), 10), settings.syncIntervalMillis) * 1000))
                    continue
                }
            }
            if now >= nextSync {
                nextSync = now + settings.syncIntervalMillis
                sync()
                continue
            }
            listen(timeoutMillis: Int(nextSync - now))
        }
        if commands != nil { sync() }
        commands?.close()
        listener?.close()
        stopped.signal()
    }

    // MARK: connection

    private func connect() {
        do {
            let c = try RedisConnection(settings.redis, timeoutMillis: Self.timeoutMillis)
            let l = try RedisConnection(settings.redis, timeoutMillis: Self.timeoutMillis)
            let reply = try l.command(["SUBSCRIBE", FleetStore.channel(settings.redis)])
            if case .error(let e) = reply { throw RedisError("SUBSCRIBE: \(e)") }
            commands = c
            listener = l
            // Subscribed first, then the stream: a change made in between is seen twice,
            // which is harmless, and none is missed.
            for change in try FleetStore.changes(c, after: changesSeen) { apply(change.id, change.action, at: change.atMillis, entry: change.entry) }
            backoff = 100
            lastError = ""
            up.store(1, ordering: .relaxed)
            server.snapshot.fleet.set(.shared)
            server.log.info("cluster: connected to \(settings.redis); limits and quotas are the fleet's")
        } catch {
            lost(error)
        }
    }

    private func lost(_ error: any Error) {
        commands?.close()
        listener?.close()
        commands = nil
        listener = nil
        let wasUp = up.exchange(0, ordering: .relaxed) == 1
        server.snapshot.fleet.set(settings.denyWhenDown ? .downDeny : .downLocal)
        let why = "\(error)"
        if wasUp || why != lastError || nextAttempt == 0 {
            server.log.error(
                "cluster: \(why); "
                    + (settings.denyWhenDown ? "keyed requests are refused (503) until Redis is back" : "enforcing alone (limits divided by limits.replicas)")
                    + ", retrying with backoff")
        }
        lastError = why
        // Jittered, so a fleet that lost Redis together does not come back in one burst.
        nextAttempt = EventLoop.monotonicMillis() + backoff / 2 + Int64.random(in: 0...(backoff / 2))
        backoff = min(backoff * 2, Self.maxBackoffMillis)
    }

    // MARK: pushed changes

    private func listen(timeoutMillis: Int) {
        guard let l = listener else { return }
        do {
            for message in try l.receive(timeoutMillis: timeoutMillis) {
                if let (id, action, at) = FleetStore.parseMessage(message) { apply(id, action, at: at, entry: nil) }
            }
        } catch {
            lost(error)
        }
    }

    /// `at` is the publisher's time; a message without one is dated on arrival.
    private func apply(_ id: String, _ action: FleetStore.Action, at: Int64?, entry: String?) {
        if let entry { changesSeen = entry }
        if server.applyPushed(id: id, PushedChange(status: action.status, atMillis: at ?? Timestamp.nowMillis())) {
            server.log.info("cluster: key \(id) \(action.rawValue) pushed by another host")
        }
    }

    // MARK: counts

    private func sync() {
        guard let c = commands else { return }
        let snapshot = server.snapshot
        let wall = Timestamp.nowSeconds()
        let started = Clock.micros()
        var counts = FleetStore.Counts()
        /// Quota counts taken for this sync (given back if it fails), and this gate's rate counts.
        var taken: [(KeyLimiter, Int64)] = []
        var mine: [String: Int64] = [:]
        if limited?.snapshot !== snapshot {
            var keys: [String: KeyLimiter] = [:]
            for e in snapshot.keys.values { if let l = e.limiter { keys[e.record.id] = l } }
            limited = (snapshot, keys)
        }
        let keys = limited!.keys
        for (id, limiter) in keys {
            let (rate, quota) = limiter.takePending(wallSeconds: wall)
            if rate > 0 {
                counts.rate.append((id, rate))
                mine[id] = rate
            }
            if quota > 0, let period = limiter.quotaPeriod {
                counts.quota.append((id, period == .month, quota))
                taken.append((limiter, quota))
            }
        }
        // Last use changes once a second at most: sent once a second.
        let sendLastUse = started / 1000 >= nextLastUse
        if sendLastUse {
            nextLastUse = started / 1000 + 1000
            for entry in snapshot.keys.values {
                let t = entry.lastUsed
                if t > 0 && lastUseSent[entry.record.id] != t { counts.lastUsed.append((entry.record.id, t)) }
            }
        }
        let totals: FleetStore.Totals
        do {
            totals = try FleetStore.sync(c, counts, wallSeconds: wall)
        } catch {
            // Nothing counted here is lost: it goes with the next sync that succeeds.
            for (limiter, quota) in taken { limiter.giveBack(quota: quota, wallSeconds: wall) }
            syncFailures.add(1, ordering: .relaxed)
            lost(error)
            return
        }
        for l in counts.lastUsed { lastUseSent[l.id] = l.seconds }
        let nowNanos = Clock.micros() * 1000
        for (id, total) in totals.rate {
            let before = rateSeen[id]
            rateSeen[id] = total
            guard let before, let limiter = keys[id] else { continue }
            // A total below what was seen means the hash expired and started again.
            let others = (total >= before ? total - before : total) - (mine[id] ?? 0)
            if others > 0 { limiter.absorb(others: others, nowNanos: nowNanos) }
        }
        for (id, limiter) in keys {
            guard let period = limiter.quotaPeriod else { continue }
            if let total = (period == .day ? totals.day : totals.month)[id] { limiter.raiseQuotaCount(to: total, wallSeconds: wall) }
        }
        let micros = Int(Clock.micros() - started)
        syncTimes.withLock {
            $0.buckets[Metrics.bucket(Double(micros) / 1e6)] += 1
            $0.micros += micros
        }
    }
}
