import CKeygateSys
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which one, and errno.
public struct IOError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32
    public init(_ operation: String, _ errno: Int32) {
        self.operation = operation
        self.errno = errno
    }
    public var description: String { "\(operation): \(String(decoding: Sys.errorText(errno), as: UTF8.self))" }
}

/// The outcome of a non-blocking call: done with a count, or "would block".
public enum IOResult: Equatable, Sendable {
    case done(Int)
    case wouldBlock
}

/// The one place that calls the socket system calls: `EINTR` is retried here, `EAGAIN` comes
/// back as `.wouldBlock`, anything else as an `IOError` naming the call.
public enum Sys {
    /// Returns the heap's free pages to the kernel, after start-up and reloads (which free far
    /// more than the steady state uses): they would otherwise count as the gate's memory for good.
    public static func releaseFreeMemory() {
        kg_release_free_memory()
    }

    /// Runs one non-blocking call: retried on `EINTR`, `.wouldBlock` on `EAGAIN`, an `IOError`
    /// named `operation` on anything else.
    @inline(__always)
    static func nonBlocking(_ operation: StaticString, _ call: () -> Int) throws(IOError) -> IOResult {
        while true {
            let n = call()
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw IOError("\(operation)", e)
        }
    }

    /// Reads from a socket. `recv` goes straight to the socket, where `read` goes through the
    /// file layer first (its position lock and iterator set-up): about 1% of a request's CPU.
    @inline(__always)
    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(IOError) -> IOResult {
        try nonBlocking("read") { kg_recv(fd, buf.baseAddress, buf.count) }
    }

    @inline(__always)
    public static func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(IOError) -> IOResult {
        try nonBlocking("write") { kg_send(fd, buf.baseAddress, buf.count) }
    }

    @inline(__always)
    public static func writev(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int32) throws(IOError) -> IOResult {
        var msg = msghdr()
        msg.msg_iov = iov
        msg.msg_iovlen = Int(count)
        return try nonBlocking("writev") { kg_sendmsg(fd, &msg) }
    }

    /// Moves up to `count` bytes from `from` to `to` (one of them a pipe) without copying them
    /// through user memory. `.done(0)` from a socket is its end of stream.
    @inline(__always)
    public static func splice(_ from: Int32, to: Int32, _ count: Int) throws(IOError) -> IOResult {
        try nonBlocking("splice") { kg_splice(from, to, count) }
    }

    /// Reads without taking: the bytes stay queued for the next read.
    public static func peek(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(IOError) -> IOResult {
        try nonBlocking("read") { kg_peek(fd, buf.baseAddress, buf.count) }
    }

    public static func accept(_ fd: Int32, _ addr: inout sockaddr_storage) throws(IOError) -> Int32? {
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let c = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { kg_accept4(fd, $0, &len) }
            }
            if c >= 0 { return c }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw IOError("accept", e)
        }
    }

    public static func close(_ fd: Int32) {
        // Linux closes the descriptor even when close() reports EINTR: never retry.
        _ = Glibc.close(fd)
    }

    public static func errorText(_ e: Int32) -> [UInt8] {
        guard let p = strerror(e) else { return Array("errno \(e)".utf8) }
        return Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
    }

    public static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Makes the next close reset the connection, discarding what the kernel still holds for
    /// it: a client that stopped reading must not keep our memory after we gave up on it.
    public static func resetOnClose(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    }

    /// The pending error of a socket whose non-blocking connect finished.
    public static func socketError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return errno }
        return err
    }
}

extension String {
    /// The text a C call wrote into `chars`, up to its first NUL (all of it when there is none).
    init(nulTerminated chars: [CChar]) {
        self.init(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
