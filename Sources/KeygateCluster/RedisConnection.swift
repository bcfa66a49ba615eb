import CHiredis
import FoundationEssentials
import Glibc
import KeygateCore

/// A Redis answer, copied out of hiredis's reply tree.
public enum RedisValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    case array([RedisValue])
    case null
    case status(String)
    case error(String)

    public var text: String? {
        switch self {
        case .string(let s), .status(let s): return s
        case .integer(let n): return String(n)
        default: return nil
        }
    }

    public var items: [RedisValue] {
        if case .array(let a) = self { return a }
        return []
    }

    /// `HGETALL`'s flat name, value, name, value… as a dictionary of numbers. Redis is shared,
    /// so a value may be anything: one that is not a whole number in `range` (no gate could
    /// have written it) is left out rather than let into arithmetic that trusts it.
    public func numbersByName(in range: ClosedRange<Int64>) -> [String: Int64] {
        let a = items
        var out: [String: Int64] = [:]
        out.reserveCapacity(a.count / 2)
        var i = 0
        while i + 1 < a.count {
            if let k = a[i].text, let v = a[i + 1].text.flatMap({ Int64($0) }), range.contains(v) { out[k] = v }
            i += 2
        }
        return out
    }
}

public struct RedisError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// One blocking hiredis connection with short timeouts: every call returns or fails within
/// `timeoutMillis`, so a dead or stalled Redis costs a bounded wait on the thread that owns
/// the connection, never on an event loop. Not thread-safe: one owner at a time.
public final class RedisConnection {
    public let address: RedisAddress
    private var context: UnsafeMutablePointer<redisContext>?

    public init(_ address: RedisAddress, timeoutMillis: Int) throws(RedisError) {
        self.address = address
        let tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: Int((timeoutMillis % 1000) * 1000))
        guard let c = redisConnectWithTimeout(address.host, Int32(address.port), tv) else {
            throw RedisError("\(address): out of memory")
        }
        context = c
        if c.pointee.err != 0 {
            let why = Self.errorText(c)
            redisFree(c)
            context = nil
            throw RedisError("\(address): \(why)")
        }
        _ = redisSetTimeout(c, tv)
        _ = redisEnableKeepAlive(c)
        if let password = address.password {
            let reply = try command(address.user.map { ["AUTH", $0, password] } ?? ["AUTH", password])
            if case .error(let e) = reply { throw RedisError("\(address): AUTH: \(e)") }
        }
        if address.db != 0 {
            let reply = try command(["SELECT", String(address.db)])
            if case .error(let e) = reply { throw RedisError("\(address): SELECT: \(e)") }
        }
    }

    deinit { close() }

    public func close() {
        if let c = context { redisFree(c) }
        context = nil
    }

    public var fileDescriptor: Int32 { context?.pointee.fd ?? -1 }

    /// One command; a Redis error answer is returned as `.error`, a broken connection throws.
    @discardableResult
    public func command(_ args: [String]) throws(RedisError) -> RedisValue {
        try pipeline([args])[0]
    }

    /// Several commands in one round trip.
    public func pipeline(_ commands: [[String]]) throws(RedisError) -> [RedisValue] {
        guard let c = context else { throw RedisError("\(address): not connected") }
        for args in commands {
            var lengths = args.map { $0.utf8.count }
            var pointers = args.map { strdup($0).map { UnsafePointer($0) } }
            defer { for p in pointers { free(UnsafeMutablePointer(mutating: p)) } }
            let status = pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeMutableBufferPointer { redisAppendCommandArgv(c, Int32(args.count), argv.baseAddress, $0.baseAddress) }
            }
            if status != REDIS_OK { throw failure(c) }
        }
        var out: [RedisValue] = []
        out.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(c, &raw) != REDIS_OK || raw == nil { throw failure(c) }
            out.append(Self.value(raw!.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return out
    }

    // MARK: subscriptions

    /// Messages already received on a subscribed connection, waiting at most `timeoutMillis`
    /// for the first. Throws when the connection is gone.
    public func receive(timeoutMillis: Int) throws(RedisError) -> [RedisValue] {
        guard let c = context else { throw RedisError("\(address): not connected") }
        var out: [RedisValue] = []
        // What hiredis already read and parsed comes first.
        drainReader(c, into: &out)
        if !out.isEmpty { return out }
        var pfd = pollfd(fd: c.pointee.fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, Int32(max(0, timeoutMillis)))
        if n < 0 {
            if errno == EINTR { return [] }
            throw RedisError("\(address): poll: \(String(cString: strerror(errno)))")
        }
        if n == 0 { return [] }
        if redisBufferRead(c) != REDIS_OK { throw failure(c) }
        drainReader(c, into: &out)
        return out
    }

    private func drainReader(_ c: UnsafeMutablePointer<redisContext>, into out: inout [RedisValue]) {
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReplyFromReader(c, &raw) == REDIS_OK, let r = raw else { return }
            out.append(Self.value(r.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(r)
        }
    }

    private func failure(_ c: UnsafeMutablePointer<redisContext>) -> RedisError {
        let why = Self.errorText(c)
        close()
        return RedisError("\(address): \(why)")
    }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        let text = withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if text.isEmpty || text == "Resource temporarily unavailable" { return c.pointee.err == REDIS_ERR_IO ? "timed out" : "connection lost" }
        return text
    }

    private static func value(_ r: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let reply = r.pointee
        func text() -> String {
            guard let s = reply.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: s, count: Int(reply.len)), as: UTF8.self)
        }
        switch reply.type {
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_ERROR: return .error(text())
        case REDIS_REPLY_INTEGER: return .integer(reply.integer)
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            items.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let e = reply.element[i] { items.append(value(e)) }
            }
            return .array(items)
        default: return .null
        }
    }
}
