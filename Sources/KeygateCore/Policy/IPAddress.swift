import KeygateHTTP
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address as 128 bits; IPv4 is held IPv4-mapped (`::ffff:a.b.c.d`) so one
/// structure serves both families.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let bits: UInt128

    public init(bits: UInt128) { self.bits = bits }

    public init(v4: UInt32) { bits = (UInt128(0xFFFF) << 32) | UInt128(v4) }

    public var isV4: Bool { bits >> 32 == 0xFFFF }

    public static func < (a: IPAddress, b: IPAddress) -> Bool { a.bits < b.bits }

    /// Parses dotted IPv4 or textual IPv6 (with optional brackets).
    public init?(_ text: String) {
        var t = text
        guard let a = t.withUTF8({ IPAddress(bytes: UnsafeRawBufferPointer($0)) }) else { return nil }
        self = a
    }

    /// Parses dotted IPv4 or textual IPv6 (with optional brackets) where the bytes lie: the
    /// request path reads forwarding chains with it, without making strings.
    public init?(bytes raw: UnsafeRawBufferPointer) {
        var t = raw
        if t.count >= 2, t[0] == UInt8(ascii: "["), t[t.count - 1] == UInt8(ascii: "]") {
            t = UnsafeRawBufferPointer(rebasing: t[1..<(t.count - 1)])
        }
        if t.contains(UInt8(ascii: ":")) {
            // inet_pton reads a C string: the text is copied onto the stack with its NUL.
            guard t.count <= 45, !t.contains(0) else { return nil }
            var a6 = in6_addr()
            let ok = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 46) { buf -> Bool in
                UnsafeMutableRawBufferPointer(buf).copyMemory(from: t)
                buf[t.count] = 0
                return inet_pton(AF_INET6, buf.baseAddress!, &a6) == 1
            }
            guard ok else { return nil }
            self.init(in6: a6)
        } else {
            guard let v4 = Self.dotted(t) else { return nil }
            self.init(v4: v4)
        }
    }

    /// Four decimal octets of one to three digits, each at most 255. Leading zeros
    /// ("010.0.0.1") are refused: some parsers read them as octal.
    static func dotted(_ t: UnsafeRawBufferPointer) -> UInt32? {
        var value: UInt32 = 0
        var octet: UInt32 = 0
        var digits = 0
        var dots = 0
        var leadingZero = false
        for b in t {
            if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
                if digits == 0 { leadingZero = b == UInt8(ascii: "0") } else if leadingZero { return nil }
                digits += 1
                octet = octet * 10 + UInt32(b - UInt8(ascii: "0"))
                guard digits <= 3, octet <= 255 else { return nil }
            } else if b == UInt8(ascii: "."), digits > 0, dots < 3 {
                value = value << 8 | octet
                octet = 0
                digits = 0
                dots += 1
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return value << 8 | octet
    }

    public init(in6 a: in6_addr) {
        var v: UInt128 = 0
        withUnsafeBytes(of: a) { raw in
            for b in raw { v = v << 8 | UInt128(b) }
        }
        bits = v
    }

    /// From a peer `sockaddr_storage` filled by accept().
    public init?(sockaddr s: sockaddr_storage) {
        var s = s
        switch Int32(s.ss_family) {
        case AF_INET:
            let v4 = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr } }
            self.init(v4: UInt32(bigEndian: v4))
        case AF_INET6:
            let a6 = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr } }
            self.init(in6: a6)
        default:
            return nil
        }
    }

    public var description: String {
        if isV4 {
            let v = UInt32(truncatingIfNeeded: bits)
            return "\(v >> 24).\((v >> 16) & 0xFF).\((v >> 8) & 0xFF).\(v & 0xFF)"
        }
        var a6 = in6_addr()
        withUnsafeMutableBytes(of: &a6) { raw in
            for i in 0..<16 { raw[i] = UInt8(truncatingIfNeeded: bits >> (8 * (15 - i))) }
        }
        var buf = [UInt8](repeating: 0, count: 64)
        _ = buf.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: 64) { inet_ntop(AF_INET6, &a6, $0, 64) }
        }
        return String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Appends the textual form to `out` (IPv4 without allocating).
    public func append<S: ByteSink>(to out: inout S) {
        if isV4 {
            // Written on the stack, then appended in one piece (one append, not fifteen).
            let v = UInt32(truncatingIfNeeded: bits)
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { buf in
                var n = 0
                var shift: UInt32 = 24
                while true {
                    let octet = Int((v >> shift) & 0xFF)
                    if octet >= 100 { buf[n] = UInt8(0x30 + octet / 100); n += 1 }
                    if octet >= 10 { buf[n] = UInt8(0x30 + (octet / 10) % 10); n += 1 }
                    buf[n] = UInt8(0x30 + octet % 10)
                    n += 1
                    if shift == 0 { break }
                    buf[n] = UInt8(ascii: ".")
                    n += 1
                    shift -= 8
                }
                out.appendBytes(UnsafeRawBufferPointer(start: buf.baseAddress, count: n))
            }
        } else {
            var text = description
            text.withUTF8 { out.appendBytes(UnsafeRawBufferPointer($0)) }
        }
    }
}

/// A CIDR block (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    public let low: UInt128
    public let high: UInt128
    public let text: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let addr = IPAddress(String(parts[0])) else { return nil }
        let maxBits = addr.isV4 && !parts[0].contains(":") ? 32 : 128
        var prefix = maxBits
        if parts.count == 2 {
            guard let p = Int(parts[1]), parts[1].allSatisfy(\.isNumber), (0...maxBits).contains(p) else { return nil }
            prefix = p
        }
        let hostBits = maxBits - prefix
        let mask: UInt128 = hostBits == 128 ? ~0 : (UInt128(1) << hostBits) - 1
        low = addr.bits & ~mask
        high = low | mask
        self.text = text
    }

    public func contains(_ a: IPAddress) -> Bool { a.bits >= low && a.bits <= high }
    public var description: String { text }
}

/// A set of CIDR blocks merged into sorted, disjoint ranges: membership is a binary search,
/// so the cost barely grows with the number of rules.
public struct CIDRSet: Sendable {
    var lows: [UInt128] = []
    var highs: [UInt128] = []

    public init(_ blocks: [CIDR]) {
        let sorted = blocks.sorted { $0.low < $1.low }
        for b in sorted {
            if let last = highs.last, last == ~0 || b.low <= last + 1 {
                highs[highs.count - 1] = max(last, b.high)
            } else {
                lows.append(b.low)
                highs.append(b.high)
            }
        }
    }

    public var isEmpty: Bool { lows.isEmpty }

    public func contains(_ a: IPAddress) -> Bool {
        var lo = 0
        var hi = lows.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if lows[mid] <= a.bits { lo = mid + 1 } else { hi = mid }
        }
        return lo > 0 && a.bits <= highs[lo - 1]
    }
}
