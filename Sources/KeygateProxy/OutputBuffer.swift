import KeygateHTTP
import KeygateIO
#if canImport(Glibc)
import Glibc
#endif

/// Bytes accepted for a socket that the kernel has not taken yet. Writes are tried directly;
/// only what the kernel refuses is copied here (or, for spliced bytes, left in their pipe).
struct OutputBuffer {
    private(set) var pending: [UInt8] = []
    private var offset = 0
    /// A pipe still holding spliced bytes for this socket; they go before `pending`.
    private var piped: SplicePipe?
    private var pipedCount = 0

    var isEmpty: Bool { pipedCount == 0 && offset == pending.count }
    var count: Int { pipedCount + pending.count - offset }

    /// Writes `parts` in order (after anything already pending). Returns false when some bytes
    /// had to be kept for later (the caller arms EPOLLOUT).
    mutating func send(_ fd: Int32, parts: WriteParts, canWrite: Bool) throws(IOError) -> Bool {
        if parts.count == 1 { return try send(fd, one: parts[0], canWrite: canWrite) }
        if !isEmpty || !canWrite {
            for p in parts { pending.append(contentsOf: p) }
            return canWrite ? try flush(fd) : false
        }
        let total = parts.byteCount
        if total == 0 { return true }
        // The iovecs live on the stack: no allocation per write.
        var failure: IOError?
        let r = withUnsafeTemporaryAllocation(of: iovec.self, capacity: parts.count) { iov -> IOResult in
            for (i, p) in parts.enumerated() {
                iov[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: p.baseAddress), iov_len: p.count)
            }
            do throws(IOError) {
                return try Sys.writev(fd, iov.baseAddress!, Int32(parts.count))
            } catch {
                failure = error
                return .wouldBlock
            }
        }
        if let failure { throw failure }
        var written = 0
        if case .done(let n) = r { written = n }
        if written == total { return true }
        // Keep the unwritten tail.
        var skip = written
        for p in parts {
            if skip >= p.count {
                skip -= p.count
                continue
            }
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[skip...]))
            skip = 0
        }
        return false
    }

    /// One buffer, without building a parts array (tunnels send one buffer per read).
    mutating func send(_ fd: Int32, one part: UnsafeRawBufferPointer, canWrite: Bool) throws(IOError) -> Bool {
        if !isEmpty || !canWrite {
            pending.append(contentsOf: part)
            return canWrite ? try flush(fd) : false
        }
        if part.isEmpty { return true }
        var written = 0
        if case .done(let n) = try Sys.write(fd, part) { written = n }
        if written == part.count { return true }
        pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: part[written...]))
        return false
    }

    /// Sends `count` bytes spliced into `pipe`, when nothing else is pending. An emptied pipe
    /// goes back to `pool`; what the socket refuses stays in the pipe, sent first by `flush`.
    /// Returns false when some bytes had to stay.
    mutating func send(_ fd: Int32, piped pipe: SplicePipe, count: Int, pool: PipePool) throws(IOError) -> Bool {
        precondition(isEmpty, "spliced bytes would overtake queued ones")
        let left = try Self.drain(pipe, count, to: fd)
        if left == 0 {
            pool.give(pipe)
            return true
        }
        piped = pipe
        pipedCount = left
        return false
    }

    /// Splices up to `count` bytes from `pipe` to `fd`; returns how many are left in the pipe.
    private static func drain(_ pipe: SplicePipe, _ count: Int, to fd: Int32) throws(IOError) -> Int {
        var left = count
        while left > 0, case .done(let n) = try Sys.splice(pipe.readEnd, to: fd, left), n > 0 {
            left -= n
        }
        return left
    }

    /// Writes what is pending. Returns true when nothing is left.
    mutating func flush(_ fd: Int32) throws(IOError) -> Bool {
        if let pipe = piped {
            pipedCount = try Self.drain(pipe, pipedCount, to: fd)
            if pipedCount > 0 { return false }
            // Emptied late: closed rather than pooled, as residues are rare.
            piped = nil
        }
        while offset < pending.count {
            var failure: IOError?
            let start = offset
            let r = pending.withUnsafeBytes { raw -> IOResult in
                do throws(IOError) {
                    return try Sys.write(fd, UnsafeRawBufferPointer(rebasing: raw[start...]))
                } catch {
                    failure = error
                    return .wouldBlock
                }
            }
            if let failure { throw failure }
            guard case .done(let n) = r else { return false }
            offset += n
        }
        // Give the memory back: idle connections must stay small.
        pending = []
        offset = 0
        return true
    }
}
