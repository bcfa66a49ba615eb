#if canImport(Glibc)
import Glibc
#endif

/// A numeric IPv4/IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible {
    public var storage = sockaddr_storage()
    public var length: socklen_t = 0
    public let description: String

    public init?(host: String, port: UInt16) {
        description = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        var s = sockaddr_storage()
        if host.contains(":") {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 else { return nil }
            withUnsafeMutableBytes(of: &s) { dst in withUnsafeBytes(of: sin6) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &sin.sin_addr) == 1 else { return nil }
            withUnsafeMutableBytes(of: &s) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        storage = s
    }

    /// The first address a name resolves to (getaddrinfo; blocking, so only at start).
    public static func resolve(host: String, port: UInt16) -> SocketAddress? {
        if let numeric = SocketAddress(host: host, port: port) { return numeric }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if ai.pointee.ai_family == AF_INET {
                var sin = ai.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
                inet_ntop(AF_INET, &sin.sin_addr, &buf, socklen_t(buf.count))
                return SocketAddress(host: String(nulTerminated: buf), port: port)
            }
            if ai.pointee.ai_family == AF_INET6 {
                var sin6 = ai.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
                inet_ntop(AF_INET6, &sin6.sin6_addr, &buf, socklen_t(buf.count))
                return SocketAddress(host: String(nulTerminated: buf), port: port)
            }
            p = ai.pointee.ai_next
        }
        return nil
    }

    var family: Int32 { Int32(storage.ss_family) }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}

public enum Sockets {
    /// A non-blocking listening socket.
    public static func listen(_ address: SocketAddress, backlog: Int32 = 4096) throws(IOError) -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError("socket", errno) }
        Sys.setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        let rc = address.withSockaddr { bind(fd, $0, $1) }
        guard rc == 0 else {
            let e = errno
            Sys.close(fd)
            throw IOError("bind \(address)", e)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let e = errno
            Sys.close(fd)
            throw IOError("listen \(address)", e)
        }
        return fd
    }

    /// Starts a non-blocking connect. Returns the fd and whether the connect is still in progress.
    public static func connect(_ address: SocketAddress) throws(IOError) -> (fd: Int32, inProgress: Bool) {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError("socket", errno) }
        Sys.setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        while true {
            let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { return (fd, false) }
            let e = errno
            if e == EINTR { continue }
            if e == EINPROGRESS { return (fd, true) }
            Sys.close(fd)
            throw IOError("connect \(address)", e)
        }
    }

    /// The port a socket is bound to (for listeners on port 0).
    public static func localPort(_ fd: Int32) -> UInt16 {
        var s = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        if Int32(s.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
        }
        return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
    }
}
