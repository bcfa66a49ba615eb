import Dispatch
import Glibc
import Synchronization
import XCTest
@testable import KeygateIO

/// Reads whatever is ready on `fd` and asks the loop to linger, as a tunnel's relay does.
private final class TunnelLike: EventHandler {
    let fd: Int32
    var reads = 0
    var bytes = 0
    init(fd: Int32) {
        self.fd = fd
    }

    func handle(events: UInt32, loop: EventLoop) {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return }
        reads += 1
        bytes += n
        loop.lingerWanted = true
    }
}

/// Reads its first byte and asks the loop to linger, as a tunnel would; after that it never
/// drains its socket, so a level-triggered loop finds it ready in every round, as it would busy
/// plain sockets.
private final class TunnelThenBusy: EventHandler {
    let fd: Int32
    var calls = 0
    init(fd: Int32) {
        self.fd = fd
    }

    func handle(events: UInt32, loop: EventLoop) {
        calls += 1
        guard calls == 1 else { return }
        var byte: UInt8 = 0
        _ = Glibc.recv(fd, &byte, 1, 0)
        loop.lingerWanted = true
    }
}

/// A `TunnelLike` that also notes, at each read, its thread and that thread's scheduling policy.
private final class PolicyNoting: EventHandler {
    let relay: TunnelLike
    var seen: [(thread: pid_t, policy: Int32)] = []
    /// Reads so far, for the test's thread to wait on without sending the loop work.
    let reads = Atomic<Int>(0)
    init(fd: Int32) {
        relay = TunnelLike(fd: fd)
    }

    func handle(events: UInt32, loop: EventLoop) {
        relay.handle(events: events, loop: loop)
        seen.append((EventLoopTests.threadID(), sched_getscheduler(0)))
        reads.add(1, ordering: .releasing)
    }

    /// Waits up to 3 s for the loop to have read `count` times.
    func waitForReads(_ count: Int) -> Bool {
        let end = EventLoop.monotonicMicros() + 3_000_000
        while reads.load(ordering: .acquiring) < count {
            if EventLoop.monotonicMicros() > end { return false }
            usleep(100)
        }
        return true
    }
}

final class EventLoopTests: XCTestCase {
    /// The calling thread's id, from /proc/thread-self ("PID/task/TID"; Glibc's module has no
    /// `gettid`).
    static func threadID() -> pid_t {
        var buf = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/thread-self", &buf, 63)
        guard n > 0 else { return -1 }
        let path = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.split(separator: "/").last.flatMap { pid_t($0) } ?? -1
    }

    /// A started loop with a handler (made by `make` for its socket) on one end of a socket
    /// pair; the test writes into the other end.
    private func loopWith<H: EventHandler>(index: Int, _ make: (Int32) -> H) throws -> (EventLoop, H, read: Int32, write: Int32) {
        let loop = try EventLoop(index: index, readBufferSize: 4096)
        loop.start()
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds), 0)
        let handler = make(fds[0])
        try loop.registerFromOutside(fds[0], handler, interest: Events.read)
        return (loop, handler, fds[0], fds[1])
    }

    /// Sends the loop work and a tick handler, and checks that the work runs within 250 ms and
    /// the tick within seconds. Returns false when the work never ran: the loop's queue is then
    /// stuck, and the test must not wait on it again.
    private func otherWorkRuns(on loop: EventLoop, failure: String) -> Bool {
        let asked = EventLoop.monotonicMillis()
        let ran = DispatchSemaphore(value: 0)
        let ticked = DispatchSemaphore(value: 0)
        loop.execute { ran.signal() }
        loop.addTickHandler { _ in ticked.signal() }
        guard ran.wait(timeout: .now() + 3) == .success else {
            XCTFail("work sent to the loop never ran")
            return false
        }
        XCTAssertLessThan(EventLoop.monotonicMillis() - asked, 250, failure)
        XCTAssertEqual(ticked.wait(timeout: .now() + 3), .success, "the loop's tick never ran")
        return true
    }

    /// A tunnel whose next bytes always arrive within a linger keeps the loop in its wake-up;
    /// the loop's other work (work sent to its queue, its ticks) must still run long before the
    /// tunnel goes quiet: work sent with `execute` at once, ticks at their pace, and anything
    /// else put on the queue within the bound on a wake-up's length.
    func testABusyTunnelDoesNotStarveTheLoopsOtherWork() throws {
        let (loop, handler, a, b) = try loopWith(index: 0, TunnelLike.init)
        // A byte every 20 µs for two seconds, from another thread (a spin: a sleep that short
        // oversleeps past the linger).
        let feeding = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let end = EventLoop.monotonicMicros() + 2_000_000
            var next = EventLoop.monotonicMicros()
            var one: UInt8 = 1
            while next < end {
                _ = Glibc.send(b, &one, 1, Int32(MSG_NOSIGNAL))
                next += 20
                while EventLoop.monotonicMicros() < next {}
            }
            feeding.signal()
        }
        usleep(100_000)
        guard otherWorkRuns(on: loop, failure: "work sent to the loop waited for the tunnel to go quiet") else { return }
        let ticks = Atomic<Int>(0)
        loop.addTickHandler { _ in ticks.add(1, ordering: .relaxed) }
        // The work just sent ended the hold; this lets the tunnel start the next.
        usleep(50_000)
        let asked = EventLoop.monotonicMillis()
        let uncounted = DispatchSemaphore(value: 0)
        loop.queue.async { uncounted.signal() }
        XCTAssertEqual(uncounted.wait(timeout: .now() + 3), .success, "work put on the queue directly never ran")
        XCTAssertLessThan(EventLoop.monotonicMillis() - asked, EventLoop.maxHoldMicros / 1000 + 300, "a hold outlasted its bound")
        usleep(800_000)
        XCTAssertGreaterThanOrEqual(ticks.load(ordering: .relaxed), 4, "the loop's ticks fell behind during a busy hold")
        XCTAssertEqual(feeding.wait(timeout: .now() + 5), .success)
        let reads = loop.sync { handler.reads }
        XCTAssertGreaterThan(reads, 100, "the tunnel was not kept busy")
        loop.sync { loop.close(a) }
        Glibc.close(b)
    }

    /// Once a wake-up has relayed tunnel bytes it may keep the loop, and it must still hand the
    /// loop back when the rounds after a linger relay nothing yet never come up empty.
    func testAWakeUpThatNeverComesUpEmptyStillHandsTheLoopBack() throws {
        let (loop, handler, a, b) = try loopWith(index: 2, TunnelThenBusy.init)
        var one: UInt8 = 1
        XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
        // The loop reads it and lingers; this byte ends the linger and is never read.
        usleep(2_000)
        XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
        usleep(50_000)
        guard otherWorkRuns(on: loop, failure: "work sent to the loop waited past the bound") else { return }
        XCTAssertGreaterThan(loop.sync { handler.calls }, 2, "the socket was not reported again")
        loop.sync { loop.close(a) }
        Glibc.close(b)
    }

    /// A linger that finds nothing hands the thread back; the next bytes still wake the loop.
    func testBytesAfterAFruitlessLingerStillWakeTheLoop() throws {
        let (loop, handler, a, b) = try loopWith(index: 1, TunnelLike.init)
        var payload: [UInt8] = [1, 2, 3]
        for round in 1...3 {
            XCTAssertEqual(Glibc.send(b, &payload, 3, 0), 3)
            var seen = 0
            for _ in 0..<200 {
                seen = loop.sync { handler.bytes }
                if seen == 3 * round { break }
                usleep(5_000)
            }
            XCTAssertEqual(seen, 3 * round, "bytes sent after a linger were not read")
            // Longer than a quiet hold keeps the loop: it has handed its thread back by now.
            usleep(UInt32(loop.longestQuietHoldMicros) + 10_000)
        }
        loop.sync { loop.close(a) }
        Glibc.close(b)
    }

    /// A hold waits for the tunnel's next bytes without a timeout of its own. Work sent to the
    /// loop while it sleeps there must wake it at once, not when the hold is up.
    func testWorkSentDuringAQuietHoldWakesTheLoop() throws {
        let (loop, _, a, b) = try loopWith(index: 3, TunnelLike.init)
        var fastest = Int64.max
        for _ in 0..<5 {
            var one: UInt8 = 1
            XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
            // The loop reads the byte, finds nothing more and sleeps in its hold.
            usleep(2_000)
            let asked = EventLoop.monotonicMicros()
            let ran = DispatchSemaphore(value: 0)
            loop.execute { ran.signal() }
            XCTAssertEqual(ran.wait(timeout: .now() + 3), .success, "work sent during a hold never ran")
            fastest = min(fastest, EventLoop.monotonicMicros() - asked)
            usleep(UInt32(loop.longestQuietHoldMicros) + 10_000)
        }
        XCTAssertLessThan(fastest, 5_000, "work sent during a hold waited for the hold to end")
        loop.sync { loop.close(a) }
        Glibc.close(b)
    }

    /// A hold that no bytes and no work end must still end by itself, within two tick periods,
    /// and the loop's ticks must keep running meanwhile.
    func testAQuietHoldEndsByItselfSoTheLoopsTimersRun() throws {
        let (loop, _, a, b) = try loopWith(index: 4, TunnelLike.init)
        let ticks = Atomic<Int>(0)
        let first = DispatchSemaphore(value: 0)
        loop.addTickHandler { _ in
            if ticks.add(1, ordering: .relaxed).newValue == 1 { first.signal() }
        }
        XCTAssertEqual(first.wait(timeout: .now() + 3), .success, "the loop's tick never ran")
        var one: UInt8 = 1
        XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
        let before = ticks.load(ordering: .relaxed)
        // Five tick periods with nothing sent to the loop: the ticks run inside a hold or after
        // it, and either way keep their pace.
        usleep(UInt32(loop.tickMillis) * 5_000)
        let ticked = ticks.load(ordering: .relaxed) - before
        XCTAssertGreaterThanOrEqual(ticked, 3, "the loop's timers stopped after a quiet hold")
        // Work put on the queue directly (not counted by `execute`) runs only once the hold
        // has handed the queue back.
        for _ in 0..<3 {
            XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
            usleep(2_000)
            let asked = EventLoop.monotonicMicros()
            let ran = DispatchSemaphore(value: 0)
            loop.queue.async { ran.signal() }
            XCTAssertEqual(ran.wait(timeout: .now() + 3), .success, "a quiet hold never handed the queue back")
            XCTAssertLessThan(EventLoop.monotonicMicros() - asked, loop.longestQuietHoldMicros + 50_000, "a quiet hold kept the queue")
        }
        // A loop whose queue is stuck in its hold would never run this.
        guard ticked > 0 else { return }
        loop.sync { loop.close(a) }
        Glibc.close(b)
    }

    /// A thread holding the loop for a tunnel runs as SCHED_BATCH (woken by the tunnel's bytes,
    /// it does not preempt the app or client it just sent to), and goes back to the default
    /// policy when the hold ends, so the pool thread carries nothing of it into other work.
    func testAHoldingThreadRunsAsBatchAndIsRestoredAfter() throws {
        let (loop, handler, a, b) = try loopWith(index: 5, PolicyNoting.init)
        XCTAssertTrue(loop.batchInHolds, "tests run under the default policy")
        let batch: Int32 = 3  // SCHED_BATCH
        var one: UInt8 = 1
        for round in 0..<3 {
            // The first byte starts a hold; the second is read inside it.
            XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
            XCTAssertTrue(handler.waitForReads(2 * round + 1), "the first byte was never read")
            XCTAssertEqual(Glibc.send(b, &one, 1, 0), 1)
            XCTAssertTrue(handler.waitForReads(2 * round + 2), "the second byte was never read")
            // Counted work ends the hold; it runs once the hold has handed the queue back.
            let ran = DispatchSemaphore(value: 0)
            loop.execute { ran.signal() }
            XCTAssertEqual(ran.wait(timeout: .now() + 3), .success)
            let seen = loop.sync { handler.seen }
            loop.sync { handler.seen.removeAll() }
            XCTAssertEqual(seen.count, 2, "both bytes were read")
            guard seen.count == 2 else { break }
            XCTAssertEqual(seen[0].policy, 0, "the wake-up began under the default policy")
            XCTAssertEqual(seen[1].policy, batch, "the hold's thread was not SCHED_BATCH")
            XCTAssertGreaterThan(seen[1].thread, 0)
            XCTAssertEqual(sched_getscheduler(seen[1].thread), 0, "the hold's thread kept SCHED_BATCH after it")
        }
        loop.sync { loop.close(a) }
        Glibc.close(b)
    }
}
