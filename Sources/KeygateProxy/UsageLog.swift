import Dispatch
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateHTTP
import Synchronization

/// The usage log: loops append encoded lines to their own buffers and hand them over in
/// batches; this writer's own queue does the file I/O, so a loop never waits on a disk.
public final class UsageLog: Sendable {
    let path: String
    let queue = DispatchQueue(label: "keygate.usage")
    private let state: Mutex<Int32>  // the file descriptor; touched only on `queue` and at reopen
    /// Bytes handed over but not yet written; beyond `maxBacklog` batches are dropped.
    let backlog = Atomic<Int>(0)
    let maxBacklog = 64 << 20
    public let written = Atomic<Int>(0)
    public let dropped = Atomic<Int>(0)

    public init(path: String) throws {
        self.path = path
        state = Mutex(try Self.open(path))
    }

    static func open(_ path: String) throws -> Int32 {
        if path == "-" { return 1 }
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            throw ServeError("cannot open usage log \(path): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Called by a loop with a batch of complete lines holding `events` events.
    func submit(_ batch: [UInt8], events: Int) {
        let size = batch.count
        if backlog.add(size, ordering: .relaxed).newValue > maxBacklog {
            backlog.subtract(size, ordering: .relaxed)
            let total = dropped.add(events, ordering: .relaxed).newValue
            if total == events || total % 10000 < events {
                StandardStreams.writeError("keygate: usage log cannot keep up, \(total) events dropped so far\n")
            }
            return
        }
        queue.async {
            let (complete, error) = self.state.withLock { fd in Self.writeAll(fd, batch, events: events) }
            self.backlog.subtract(size, ordering: .relaxed)
            self.written.add(complete, ordering: .relaxed)
            if complete < events { self.failed(events - complete, error) }
        }
    }

    /// Writes `batch`; returns how many whole lines reached the file, and the error that stopped
    /// the write (0 when none). A failed write (a full disk, a closed pipe on stdout) loses only
    /// the lines it did not complete.
    static func writeAll(_ fd: Int32, _ batch: [UInt8], events: Int) -> (lines: Int, error: Int32) {
        batch.withUnsafeBytes { raw in
            let (off, error) = System.writeAll(fd, raw)
            if off == raw.count { return (events, 0) }
            var lines = 0
            for b in raw[0..<off] where b == 0x0A { lines += 1 }
            return (lines, error)
        }
    }

    /// Counts events that could not be written and says so, at most once per 10,000.
    private func failed(_ events: Int, _ e: Int32) {
        let total = dropped.add(events, ordering: .relaxed).newValue
        if total == events || total / 10000 != (total - events) / 10000 {
            StandardStreams.writeError("keygate: usage log write failed (\(String(cString: strerror(e)))), \(total) events dropped so far\n")
        }
    }

    /// Reopens the file (after logrotate moved it).
    public func reopen() {
        queue.async {
            guard self.path != "-", let fd = try? Self.open(self.path) else { return }
            self.state.withLock { old in
                Glibc.close(old)
                old = fd
            }
        }
    }

    /// Waits until everything handed over is written and synced.
    public func flush() {
        queue.sync {
            state.withLock { fd in _ = fsync(fd) }
        }
    }
}

/// A loop's private batch of encoded usage lines.
struct UsageBatch {
    /// The batch in raw memory: a usage line is some twenty pieces, each appended with a copy
    /// and no array bookkeeping.
    let buffer = ByteBuffer(capacity: Self.flushBytes + 4096)
    var events = 0
    var clock = Timestamp.SecondCache()
    static let flushBytes = 64 << 10

    init() {}

    mutating func add(_ event: UsageEvent, to log: UsageLog) {
        event.append(to: buffer, clock: &clock)
        events += 1
        if buffer.count >= Self.flushBytes { flush(to: log) }
    }

    mutating func flush(to log: UsageLog) {
        guard events > 0 else { return }
        log.submit(Array(buffer.bytes), events: events)
        buffer.removeAll()
        events = 0
    }
}
