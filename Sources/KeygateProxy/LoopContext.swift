import KeygateCore
import KeygateIO
import Synchronization

/// Counters a loop keeps for itself; the admin endpoint reads them by visiting the loop.
struct LoopMetrics {
    var requests: [Int] = Array(repeating: 0, count: DenyReason.allCases.count + 1)  // last = allowed
    var statusClasses = [Int](repeating: 0, count: 6)
    var durationBuckets = [Int](repeating: 0, count: Metrics.bucketBounds.count + 1)
    var durationSum: Double = 0
    var upstreamBuckets = [Int](repeating: 0, count: Metrics.bucketBounds.count + 1)
    var upstreamSum: Double = 0
    var upstreamCount = 0
    var upstreamOpen = 0
    var tunnelsOpen = 0
    var tunnelsClosed = [Int](repeating: 0, count: TunnelEnd.allCases.count)
    /// TLS handshakes: [ok, failed].
    var tlsHandshakes = [0, 0]
    /// Upstream connections carrying a request (open minus pooled); filled in when gathered.
    var upstreamInUse = 0
    var timeouts = [Int](repeating: 0, count: TimeoutKind.allCases.count)
    /// Request bodies held in memory before the upstream is contacted, now.
    var requestBufferBytes = 0
    /// Bodies that would have been buffered but streamed, the loop's buffer bound being reached.
    var requestBufferFull = 0

    mutating func record(_ e: UsageEvent) {
        if let r = e.reason {
            requests[r.index] += 1
        } else {
            requests[requests.count - 1] += 1
        }
        statusClasses[min(max(e.status / 100, 0), 5)] += 1
        let seconds = Double(e.durationMicros) / 1e6
        durationBuckets[Metrics.bucket(seconds)] += 1
        durationSum += seconds
        if let u = e.upstreamMicros {
            let us = Double(u) / 1e6
            upstreamBuckets[Metrics.bucket(us)] += 1
            upstreamSum += us
            upstreamCount += 1
        }
    }
}

/// Why keygate gave up waiting on a client (`keygate_timeouts_total{kind}`).
enum TimeoutKind: String, CaseIterable {
    /// The request head did not arrive within `timeouts.header_read`.
    case header
    /// The request body did not arrive within `timeouts.body_total`.
    case body_total
    /// The request body averaged less than `limits.min_body_rate`.
    case body_rate
    /// The client took no bytes of its answer for `timeouts.send`.
    case send
    /// A keep-alive connection sent no next request within `timeouts.idle`.
    case idle
}

/// What ended a tunnel (`keygate_tunnels_closed_total{cause}`); the first cause found counts.
enum TunnelEnd: String, CaseIterable {
    /// The client closed it, or its connection failed.
    case client
    /// The upstream closed it, or its connection failed.
    case upstream
    /// The key that opened it was revoked, disabled, deleted or expired.
    case key
    /// No bytes either way for `timeouts.tunnel_idle`.
    case idle
    /// The client took nothing for `timeouts.send`.
    case send
    /// The gate shut down with the tunnel still open after `shutdown_grace`.
    case shutdown

    var index: Int { Self.allCases.firstIndex(of: self)! }
}

/// Everything one loop owns: its snapshot, its upstream pool, its connections, its usage batch.
final class LoopContext: @unchecked Sendable {
    let loop: EventLoop
    // unowned(unsafe): the server outlives its loops; a checked reference costs a retain and
    // release on every use, and this one is used on every request.
    unowned(unsafe) let server: Server
    var snapshot: Snapshot
    /// The certificates new connections get; replaced whole by a reload.
    var tls: TLSServerContext?
    var clients: [ClientConnection] = []
    /// The loop's clients plus those handed to it and not yet set up (`Server.place` counts
    /// them in; `remove`, or a refusal before `add`, counts them out): read by every loop's
    /// listener to place new connections evenly.
    let placed = Atomic<Int>(0)
    var pool: [UpstreamConnection] = []
    /// Pipes for tunnels that splice large messages (`ClientConnection+Tunnel`).
    let pipes = PipePool()
    var usage = UsageBatch()
    var metrics = LoopMetrics()
    var requestCounter: UInt64 = 0
    var draining = false
    let requestIDPrefix: [UInt8]
    /// Request bodies one loop may hold in memory at once, all connections together; beyond
    /// it new bodies stream (keygate never writes bodies to disk).
    static let requestBufferBudget = 64 << 20

    init(loop: EventLoop, server: Server, snapshot: Snapshot, bootID: [UInt8]) {
        self.loop = loop
        self.server = server
        self.snapshot = snapshot
        var prefix = bootID
        prefix.append(UInt8(ascii: "-"))
        JSONBytes.appendInt(loop.index, to: &prefix)
        prefix.append(UInt8(ascii: "-"))
        requestIDPrefix = prefix
    }

    /// Where the client's head of an upstream answer is built; it is written out, or copied
    /// into the connection's output, before the next answer needs it.
    var headScratch: [UInt8] = []

    /// Buffers a request builds: its id and its head to the upstream (kept for a retry while it
    /// is in flight), taken when it starts and given back when it is recorded, and keygate's
    /// own answers, given back once sent. A loop reuses a few of them instead of allocating per
    /// request; idle connections hold none.
    private var spareBuffers: [[UInt8]] = []
    static let maxSpareBuffers = 64
    static let maxSpareCapacity = 16 << 10

    /// An empty buffer, with the capacity of one a finished request gave back when there is
    /// one. (Were that request's copy still alive, emptying it makes a fresh buffer: the old
    /// bytes are never touched.)
    func takeBuffer() -> [UInt8] {
        guard var b = spareBuffers.popLast() else { return [] }
        b.removeAll(keepingCapacity: true)
        return b
    }

    func giveBack(_ b: [UInt8]) {
        guard spareBuffers.count < Self.maxSpareBuffers, b.capacity <= Self.maxSpareCapacity else { return }
        spareBuffers.append(b)
    }

    /// A request id unique across loops and restarts: boot id, loop, counter.
    func appendRequestID(to id: inout [UInt8]) {
        requestCounter += 1
        id.append(contentsOf: requestIDPrefix)
        var shift = (UInt64.bitWidth - requestCounter.leadingZeroBitCount + 3) / 4 * 4 - 4
        while shift >= 0 {
            let digit = UInt8((requestCounter >> UInt64(shift)) & 0xF)
            id.append(digit < 10 ? 0x30 + digit : 0x57 + digit)
            shift -= 4
        }
    }

    func record(_ e: UsageEvent) {
        metrics.record(e)
        usage.add(e, to: server.usageLog)
        if rollup != nil, let finished = rollup!.add(e) { server.rollups?.merge(finished) }
    }

    /// This loop's per-key counts for the console (nil without a console), handed over about
    /// once a second.
    var rollup: RollupBatch?
    private var rollupHandedAt: Int64 = 0

    func handOverRollup() {
        guard rollup != nil, let store = server.rollups else { return }
        rollupHandedAt = loop.now
        store.merge(rollup!.take())
    }

    func add(_ c: ClientConnection) {
        c.slot = clients.count
        clients.append(c)
    }

    func remove(_ c: ClientConnection) {
        let i = c.slot
        guard i >= 0, i < clients.count, clients[i] === c else { return }
        let last = clients.removeLast()
        if i < clients.count {
            clients[i] = last
            last.slot = i
        }
        c.slot = -1
        placed.subtract(1, ordering: .relaxed)
    }

    /// Runs every tick: flush the usage batch, check deadlines, trim the pool.
    func tick() {
        usage.flush(to: server.usageLog)
        let now = loop.now
        if rollup != nil && now - rollupHandedAt >= 1000 { handOverRollup() }
        var i = 0
        while i < clients.count {
            let c = clients[i]
            c.checkDeadline(now)
            // checkDeadline may remove c (swap-remove): only advance if it is still here.
            if i < clients.count && clients[i] === c { i += 1 }
        }
        for (id, closed) in keyClosures {
            server.log.info("tunnels: closed \(closed.count) opened with key \(id) (\(closed.why))")
        }
        keyClosures.removeAll()
        pool.removeAll { u in
            if now - u.idleSince > Server.poolIdleMillis {
                u.close()
                return true
            }
            return false
        }
    }

    /// Tunnels closed in this tick because their key is no longer valid, by key id: one log
    /// line per key and tick, however many tunnels it had open.
    private var keyClosures: [String: (why: String, count: Int)] = [:]

    func tunnelClosedForKey(_ id: String, why: String) {
        keyClosures[id, default: (why, 0)].count += 1
    }

    private var upstreamWarnedAt: Int64 = 0
    private var upstreamWarningsHeld = 0

    /// Why an upstream exchange failed, in the operational log at most once a second per loop
    /// (a dead upstream must not flood the log); the lines held back are counted.
    func warnUpstream(_ why: String) {
        if loop.now - upstreamWarnedAt < 1000 {
            upstreamWarningsHeld += 1
            return
        }
        let held = upstreamWarningsHeld
        upstreamWarnedAt = loop.now
        upstreamWarningsHeld = 0
        server.log.warning("upstream: \(why)" + (held > 0 ? " (and \(held) more in the last second)" : ""))
    }

    func releaseToPool(_ u: UpstreamConnection) {
        if draining || pool.count >= Server.maxPoolPerLoop {
            u.close()
            return
        }
        u.parkInPool(now: loop.now)
        pool.append(u)
    }

    func removeFromPool(_ u: UpstreamConnection) {
        if let i = pool.firstIndex(where: { $0 === u }) { pool.remove(at: i) }
    }
}
