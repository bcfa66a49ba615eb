import CKeygateSys
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Something registered with a loop's epoll set: told which events are ready.
public protocol EventHandler: AnyObject {
    func handle(events: UInt32, loop: EventLoop)
}

public enum Events {
    public static let read = UInt32(KG_EPOLLIN | KG_EPOLLRDHUP)
    public static let write = UInt32(KG_EPOLLOUT)
    public static let exclusive = UInt32(KG_EPOLLEXCLUSIVE)
    public static let error = UInt32(KG_EPOLLERR | KG_EPOLLHUP)
    public static let readable = UInt32(KG_EPOLLIN)
    public static let writable = UInt32(KG_EPOLLOUT)
    public static let hangup = UInt32(KG_EPOLLHUP | KG_EPOLLRDHUP)
}

/// One event loop: a serial DispatchQueue that owns a private epoll set, woken by a single
/// `DispatchSourceRead` on the epoll fd. Each wake-up takes a whole batch of ready sockets.
///
/// Everything here runs on `queue`; other threads reach the loop only through `execute`.
public final class EventLoop: @unchecked Sendable {
    struct Slot {
        var handler: EventHandler?
        var generation: UInt32 = 0
        var interest: UInt32 = 0
    }

    public let index: Int
    public let queue: DispatchQueue
    let epfd: Int32
    private var source: DispatchSourceRead?
    private var timer: DispatchSourceTimer?
    private let tags: UnsafeMutablePointer<UInt64>
    private let readyEvents: UnsafeMutablePointer<UInt32>
    private let maxEvents: Int32 = 256
    private var slots: [Slot] = []
    private var generation: UInt32 = 0
    /// Handlers deregistered during a batch stay alive until its end: a later event in the same
    /// batch may still name them.
    private var retired: [EventHandler] = []
    /// A scratch buffer for reads, shared by every connection of the loop. 256 KiB by default:
    /// a 64 KiB answer and its head are then one read from the upstream and one send to the
    /// client, where a 64 KiB buffer took three reads and two sends.
    public let readBuffer: UnsafeMutableRawBufferPointer
    /// A second scratch buffer, for ciphertext on its way out (the read buffer may hold the
    /// plaintext being encrypted).
    public let outputScratch: UnsafeMutableRawBufferPointer
    /// Monotonic milliseconds, refreshed at each wake-up.
    public private(set) var now: Int64 = 0
    /// Called on every timer tick (every `tickMillis`); touched only on `queue`.
    private var tickHandlers: [(EventLoop) -> Void] = []
    public let tickMillis = 100
    private var tickMicros: Int64 { Int64(tickMillis) * 1000 }
    /// When the tick handlers last ran, from the tick timer or inside a hold.
    private var lastTickMicros: Int64 = 0
    /// Written by `execute` and `sync` while the loop waits out a hold in its own epoll set
    /// (`runBatch`), so that the work sent to it runs at once.
    private let wakeFD: Int32
    /// Fires when the loop's next tick is due during a hold, so that the loop, waiting without
    /// a timeout, wakes to run it.
    private let holdTimerFD: Int32
    /// True while the loop waits out a hold: `execute` and `sync` then write `wakeFD`.
    private let waitingInHold = Atomic<Bool>(false)
    /// Whether a hold switches its thread to SCHED_BATCH: only when the process runs under the
    /// default policy (one an operator chose, real-time or batch, is left alone).
    let batchInHolds: Bool

    public init(index: Int, readBufferSize: Int = 262_144) throws(IOError) {
        self.index = index
        queue = DispatchQueue(label: "keygate.loop.\(index)")
        epfd = kg_epoll_create()
        guard epfd >= 0 else { throw IOError("epoll_create1", errno) }
        tags = .allocate(capacity: Int(maxEvents))
        readyEvents = .allocate(capacity: Int(maxEvents))
        readBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
        outputScratch = .allocate(byteCount: 65536, alignment: 16)
        slots = Array(repeating: Slot(), count: 1024)
        now = Self.monotonicMillis()
        wakeFD = kg_eventfd()
        guard wakeFD >= 0 else { throw IOError("eventfd", errno) }
        holdTimerFD = kg_timerfd()
        guard holdTimerFD >= 0 else { throw IOError("timerfd_create", errno) }
        batchInHolds = kg_thread_policy_is_default() != 0
        try register(wakeFD, WakeDescriptor(fd: wakeFD), interest: Events.readable)
        try register(holdTimerFD, WakeDescriptor(fd: holdTimerFD), interest: Events.readable)
    }

    /// Starts the loop's read source and tick timer.
    public func start() {
        let s = DispatchSource.makeReadSource(fileDescriptor: epfd, queue: queue)
        s.setEventHandler { [unowned self] in self.runBatch() }
        s.resume()
        source = s
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + .milliseconds(tickMillis), repeating: .milliseconds(tickMillis), leeway: .milliseconds(20))
        t.setEventHandler { [unowned self] in
            // A hold that just ended may have run this tick already.
            let at = Self.monotonicMicros()
            if at - self.lastTickMicros >= self.tickMicros / 2 { self.runTicks(at: at) }
        }
        t.resume()
        timer = t
    }

    /// Adds a tick handler from any thread: the list is changed on the loop's own queue, so
    /// a running tick never sees it half-changed.
    public func addTickHandler(_ handler: @escaping (EventLoop) -> Void) {
        nonisolated(unsafe) let h = handler
        execute { self.tickHandlers.append(h) }
    }

    /// Runs `work` on the loop's queue. Work reaches a loop only through this and `sync`: a
    /// wake-up holding the queue for busy tunnels hands it over only for work it has counted.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        announceWork()
        queue.async { [self] in
            pendingWork.subtract(1, ordering: .relaxed)
            work()
        }
    }

    /// Runs `work` on the loop's queue and waits for it (never from the loop itself).
    public func sync<T>(_ work: () throws -> T) rethrows -> T {
        announceWork()
        return try queue.sync {
            pendingWork.subtract(1, ordering: .relaxed)
            return try work()
        }
    }

    /// Counted so that a wake-up holding the queue for busy tunnels hands it back at once, and
    /// a loop asleep in its hold is woken for it. Both sides are sequentially consistent:
    /// either the loop sees the count before it sleeps or this sees it waiting.
    private func announceWork() {
        pendingWork.add(1, ordering: .sequentiallyConsistent)
        if waitingInHold.load(ordering: .sequentiallyConsistent) { _ = kg_eventfd_signal(wakeFD) }
    }
    /// Work sent to the queue and not yet run.
    private let pendingWork = Atomic<Int>(0)

    public static func monotonicMillis() -> Int64 {
        monotonicMicros() / 1000
    }

    static func monotonicMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }

    /// Set by a handler that relayed tunnel bytes: the loop then keeps its thread while the
    /// tunnels stay busy (see `runBatch`). Cleared at the end of every wake-up.
    public var lingerWanted = false
    /// Batches taken per wake-up when no tunnel bytes were relayed.
    static let maxRounds = 8
    /// How long one wake-up that relays tunnel bytes may keep the loop's queue. Its ticks run
    /// inside the hold and counted work ends it, so only what reaches the queue some other way
    /// (none of keygate's own work does) waits this long.
    static let maxHoldMicros: Int64 = 1_000_000
    /// A hold ends at a tick that finds no tunnel bytes relayed since the one before: a quiet
    /// tunnel keeps the loop's thread for two tick periods at most.
    public var longestQuietHoldMicros: Int64 { 2 * tickMicros }

    /// Runs the tick handlers; only between rounds, so no event of a round names a handler
    /// released here.
    private func runTicks(at micros: Int64) {
        lastTickMicros = micros
        now = micros / 1000
        for h in tickHandlers { h(self) }
        retired.removeAll(keepingCapacity: true)
    }

    /// Arms the hold timer for the next tick.
    private func armForNextTick(after micros: Int64) {
        let left = lastTickMicros + tickMicros - micros
        _ = kg_timerfd_arm(holdTimerFD, Int(max(left, 1)))
    }

    private func runBatch() {
        let start = Self.monotonicMicros()
        now = start / 1000
        // Keep taking batches while sockets are ready (up to eight rounds): answers that arrive
        // while one batch is handled are picked up without another trip through libdispatch's
        // manager thread. Sixteen rounds saved no more CPU and cost tail latency.
        //
        // A tunnel's next message is usually a few tens of microseconds away, and handing the
        // thread back costs libdispatch a re-arm, an eventfd write and two thread switches per
        // wake-up. So once a batch relayed tunnel bytes, the loop keeps its thread and, when a
        // round comes up empty, waits in its own epoll set, as a plain event-loop thread would.
        // It hands the thread back when a round relays no tunnel bytes and the next finds
        // nothing ready, when work is sent to its queue (`execute` wakes it), at a tick that
        // finds the tunnels quiet since the tick before, or a second after the wake-up. Its ticks
        // run inside the hold (a timerfd wakes the wait for them): a hold that ended every 20 ms
        // put the relay on another pool thread 50 times a second, and two loops echoed 3-4%
        // fewer 64-byte messages for it (docs/performance.md). The wait has no timeout of its
        // own: a timed wait arms and cancels a kernel timer every time it sleeps, which cost
        // 4-5% more CPU per message with two loops. Plain HTTP never waits: measured, it saved
        // nothing there.
        //
        // A holding thread runs as SCHED_BATCH: same share of the CPU, but woken by a tunnel's
        // bytes it no longer preempts the task on its core (often the app or the client it
        // just sent to), so bytes gather into batches instead of each costing a switch. With
        // two loops that was 5% more 64-byte echo messages and 16-26% more at 16 KiB, with
        // less CPU per message (docs/performance.md).
        var rounds = 0
        var relayed = false
        var relayedSinceTick = false
        while relayed || rounds < Self.maxRounds {
            let n: Int32
            if relayed && lingerWanted {
                lingerWanted = false
                n = waitInHold()
            } else {
                n = kg_epoll_wait(epfd, tags, readyEvents, maxEvents, 0)
            }
            if n <= 0 { break }
            var roundStart = start
            if relayed {
                roundStart = Self.monotonicMicros()
                now = roundStart / 1000
            }
            for i in 0..<Int(n) {
                let tag = tags[i]
                let fd = Int(tag & 0xFFFF_FFFF)
                let gen = UInt32(tag >> 32)
                guard fd < slots.count, slots[fd].generation == gen, let h = slots[fd].handler else { continue }
                h.handle(events: readyEvents[i], loop: self)
            }
            if lingerWanted && !relayed {
                relayed = true
                armForNextTick(after: Self.monotonicMicros())
                if batchInHolds { _ = kg_thread_set_batch(1) }
            }
            if relayed {
                if lingerWanted { relayedSinceTick = true }
                // Checked on every round, not only on rounds that relayed: other sockets may
                // keep every round busy.
                if roundStart - start >= Self.maxHoldMicros || pendingWork.load(ordering: .relaxed) > 0 { break }
                if roundStart - lastTickMicros >= tickMicros {
                    runTicks(at: roundStart)
                    if !relayedSinceTick { break }
                    relayedSinceTick = false
                    // Wait on even when the timer alone woke this round.
                    lingerWanted = true
                    armForNextTick(after: roundStart)
                }
            }
            rounds += 1
        }
        // Disarmed, and any expiry not yet read cleared, so it cannot wake the loop for nothing.
        if relayed {
            _ = kg_timerfd_arm(holdTimerFD, 0)
            if batchInHolds { _ = kg_thread_set_batch(0) }
        }
        lingerWanted = false
        retired.removeAll(keepingCapacity: true)
    }

    /// Waits for ready sockets with no timeout (the hold timer bounds it), unless work waits
    /// for the queue (0 then, as for nothing ready).
    private func waitInHold() -> Int32 {
        waitingInHold.store(true, ordering: .sequentiallyConsistent)
        defer { waitingInHold.store(false, ordering: .relaxed) }
        if pendingWork.load(ordering: .sequentiallyConsistent) > 0 { return 0 }
        return kg_epoll_wait(epfd, tags, readyEvents, maxEvents, -1)
    }

    /// Adds `fd` to the loop's epoll set, level-triggered.
    public func register(_ fd: Int32, _ handler: EventHandler, interest: UInt32) throws(IOError) {
        let i = Int(fd)
        if i >= slots.count { slots.append(contentsOf: repeatElement(Slot(), count: max(i + 1 - slots.count, slots.count))) }
        generation &+= 1
        slots[i] = Slot(handler: handler, generation: generation, interest: interest)
        let tag = UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd))
        guard kg_epoll_ctl(epfd, 1, fd, interest, tag) == 0 else {
            let e = errno
            slots[i].handler = nil
            throw IOError("epoll_ctl add", e)
        }
    }

    /// `register`, from another thread: runs on the loop's queue and waits for it (start-up).
    public func registerFromOutside(_ fd: Int32, _ handler: EventHandler, interest: UInt32) throws(IOError) {
        nonisolated(unsafe) let h = handler
        let failure: IOError? = sync {
            do throws(IOError) {
                try register(fd, h, interest: interest)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    /// Changes what `fd` waits for; a no-op when nothing changes.
    public func setInterest(_ fd: Int32, _ interest: UInt32) {
        let i = Int(fd)
        guard i < slots.count, slots[i].handler != nil, slots[i].interest != interest else { return }
        slots[i].interest = interest
        let tag = UInt64(slots[i].generation) << 32 | UInt64(UInt32(bitPattern: fd))
        _ = kg_epoll_ctl(epfd, 3, fd, interest, tag)
    }

    public func interest(_ fd: Int32) -> UInt32 {
        let i = Int(fd)
        return i < slots.count ? slots[i].interest : 0
    }

    /// Removes `fd` from the epoll set and closes it. Every descriptor the loop owns is closed
    /// here, exactly once.
    public func close(_ fd: Int32) {
        let i = Int(fd)
        if i < slots.count, let h = slots[i].handler {
            retired.append(h)
            slots[i].handler = nil
            slots[i].interest = 0
            _ = kg_epoll_ctl(epfd, 2, fd, 0, 0)
        }
        Sys.close(fd)
    }

    /// Removes a shared descriptor (the listener) without closing it.
    public func deregister(_ fd: Int32) {
        let i = Int(fd)
        guard i < slots.count, let h = slots[i].handler else { return }
        retired.append(h)
        slots[i].handler = nil
        _ = kg_epoll_ctl(epfd, 2, fd, 0, 0)
    }
}

/// One of the loop's own wake-up descriptors (the hold's eventfd and timerfd). Waking the
/// loop is all it is for: `runBatch` reads the clock and the work count, so reading the
/// descriptor only clears it.
private final class WakeDescriptor: EventHandler {
    let fd: Int32

    init(fd: Int32) {
        self.fd = fd
    }

    func handle(events: UInt32, loop: EventLoop) {
        _ = kg_drain_fd(fd)
    }
}
