import KeygateHTTP

/// `keygate usage`: aggregates usage events, streaming, in bounded memory.
public struct UsageReport {
    public enum Pivot: String, CaseIterable, Sendable { case key, route, country, status, reason }

    public struct Filter {
        public var sinceMillis: Int64?
        public var untilMillis: Int64?
        public var keyID: String?
        public init(sinceMillis: Int64? = nil, untilMillis: Int64? = nil, keyID: String? = nil) {
            self.sinceMillis = sinceMillis
            self.untilMillis = untilMillis
            self.keyID = keyID
        }
    }

    /// Figures for one group (a key, a route, a country…).
    public final class Group {
        public var requests = 0
        public var allowed = 0
        public var denied: [String: Int] = [:]
        public var lastMillis: Int64 = 0
        public var name: String?
        public var owner: String?
        var clientIPs = Set<String>()
        public var clientIPsCapped = false
        var routes: [String: Int] = [:]
        var countries: [String: Int] = [:]
        var durations = LatencyHistogram()

        public var distinctClientIPs: Int { clientIPs.count }
        public func top(_ d: [String: Int], _ n: Int) -> [(String, Int)] {
            d.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(n).map { ($0.key, $0.value) }
        }
        public var topRoutes: [(String, Int)] { top(routes, 3) }
        public var topCountries: [(String, Int)] { top(countries, 3) }
        public var p50: Double { durations.quantile(0.5) }
        public var p99: Double { durations.quantile(0.99) }

        static let maxDistinct = 100_000
        static let maxRoutes = 1_000
    }

    public let pivot: Pivot
    public let filter: Filter
    public private(set) var groups: [String: Group] = [:]
    public private(set) var lines = 0
    public private(set) var matched = 0
    public private(set) var malformed = 0
    /// Last lines with no line end yet that do not parse: an event the gate is still writing.
    public private(set) var unfinished = 0

    public init(pivot: Pivot, filter: Filter) {
        self.pivot = pivot
        self.filter = filter
    }

    /// Feeds one line (without its newline). `unfinished`: the file ended before this line's
    /// newline, as it does while the gate is appending to a live log.
    public mutating func add(line: UnsafeBufferPointer<UInt8>, unfinished: Bool = false) {
        let parsed = UsageLine.parse(line)
        if parsed == nil && unfinished {
            self.unfinished += 1
            return
        }
        lines += 1
        guard let e = parsed else {
            malformed += 1
            return
        }
        if let s = filter.sinceMillis, e.ts < s { return }
        if let u = filter.untilMillis, e.ts >= u { return }
        if let k = filter.keyID, e.keyID != k { return }
        matched += 1
        let route = Self.routeName(e.method, e.path)
        let groupKey: String
        switch pivot {
        case .key: groupKey = e.keyID ?? "-"
        case .route: groupKey = route
        case .country: groupKey = e.country ?? "-"
        case .status: groupKey = String(e.status)
        case .reason: groupKey = e.reason ?? (e.allowed ? "allowed" : "-")
        }
        let g: Group
        if let existing = groups[groupKey] {
            g = existing
        } else {
            g = Group()
            groups[groupKey] = g
        }
        g.requests += 1
        if e.allowed && e.reason == nil { g.allowed += 1 } else { g.denied[e.reason ?? "other", default: 0] += 1 }
        if e.ts > g.lastMillis { g.lastMillis = e.ts }
        if g.name == nil, let n = e.keyName { g.name = n }
        if g.owner == nil, let o = e.owner { g.owner = o }
        if let ip = e.clientIP {
            if g.clientIPs.count < Group.maxDistinct { g.clientIPs.insert(ip) } else if !g.clientIPs.contains(ip) { g.clientIPsCapped = true }
        }
        if g.routes.count < Group.maxRoutes || g.routes[route] != nil { g.routes[route, default: 0] += 1 }
        g.countries[e.country ?? "-", default: 0] += 1
        g.durations.add(e.durationMs)
    }

    /// `GET /suppliers/:id`: numeric and id-like segments folded so routes group together.
    static func routeName(_ method: String, _ path: String) -> String {
        routeName(ArraySlice(method.utf8), ArraySlice(path.utf8))
    }

    /// The same from the bytes of a usage event, without making strings of them first.
    static func routeName(_ method: ArraySlice<UInt8>, _ p: ArraySlice<UInt8>) -> String {
        var out = Array(method)
        out.append(0x20)
        var i = p.startIndex
        while i < p.endIndex {
            // p[i] == "/" (paths start with one)
            out.append(p[i])
            var e = i + 1
            var digits = true
            var hexish = true
            while e < p.endIndex, p[e] != UInt8(ascii: "/") {
                let b = p[e]
                let isDigit = b >= 0x30 && b <= 0x39
                if !isDigit { digits = false }
                if !(isDigit || (b | 0x20 >= 0x61 && b | 0x20 <= 0x66) || b == UInt8(ascii: "-")) { hexish = false }
                e += 1
            }
            let len = e - i - 1
            if len > 0 && (digits || (hexish && len >= 16)) {
                out.append(contentsOf: ":id".utf8)
            } else {
                out.append(contentsOf: p[(i + 1)..<e])
            }
            i = e
        }
        if p.isEmpty { out.append(UInt8(ascii: "/")) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The fields of a usage line the report needs, read without a general JSON decoder.
struct UsageLine {
    var ts: Int64 = 0
    var allowed = false
    var reason: String?
    var status = 0
    var keyID: String?
    var keyName: String?
    var owner: String?
    var clientIP: String?
    var country: String?
    var method = ""
    var path = ""
    var durationMs = 0.0

    static func parse(_ line: UnsafeBufferPointer<UInt8>) -> UsageLine? {
        var r = KeyRecordCodec.Reader(bytes: line)
        var e = UsageLine()
        var sawTS = false
        do throws(KeyRecordCodec.Failure) {
            try r.expect(UInt8(ascii: "{"))
            while true {
                let key = try r.plainString()
                let k = UnsafeBufferPointer(rebasing: line[key])
                try r.expect(UInt8(ascii: ":"))
                if k.equalsLowercased(0..<k.count, "ts") {
                    guard let t = Timestamp.parseMillis(bytes: UnsafeBufferPointer(rebasing: line[try r.plainString()])) else { return nil }
                    e.ts = t
                    sawTS = true
                } else if k.equalsLowercased(0..<k.count, "decision") {
                    let d = UnsafeBufferPointer(rebasing: line[try r.plainString()])
                    e.allowed = d.equalsLowercased(0..<d.count, "allow")
                } else if k.equalsLowercased(0..<k.count, "reason") {
                    e.reason = try r.optionalString()
                } else if k.equalsLowercased(0..<k.count, "status") {
                    e.status = try r.optionalInt("status") ?? 0
                } else if k.equalsLowercased(0..<k.count, "key_id") {
                    e.keyID = try r.optionalString()
                } else if k.equalsLowercased(0..<k.count, "key_name") {
                    e.keyName = try r.optionalString()
                } else if k.equalsLowercased(0..<k.count, "owner") {
                    e.owner = try r.optionalString()
                } else if k.equalsLowercased(0..<k.count, "client_ip") {
                    e.clientIP = try r.optionalString()
                } else if k.equalsLowercased(0..<k.count, "country") {
                    e.country = try r.optionalString()
                } else if k.equalsLowercased(0..<k.count, "method") {
                    e.method = try r.string()
                } else if k.equalsLowercased(0..<k.count, "path") {
                    e.path = try r.string()
                } else if k.equalsLowercased(0..<k.count, "duration_ms") {
                    // A log keygate did not write may hold anything: out-of-range numbers make
                    // the line malformed (counted), never a trap.
                    let ms = try r.number()
                    guard ms.isFinite, ms >= 0 else { return nil }
                    e.durationMs = ms
                } else {
                    try r.skipValue()
                }
                if try !r.nextMember() { break }
            }
        } catch {
            return nil
        }
        return sawTS ? e : nil
    }
}

extension KeyRecordCodec.Reader {
    mutating func number() throws(KeyRecordCodec.Failure) -> Double {
        skipSpace()
        let start = i
        while i < bytes.count, (bytes[i] >= 0x30 && bytes[i] <= 0x39) || bytes[i] == UInt8(ascii: ".") || bytes[i] == UInt8(ascii: "-")
            || bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") || bytes[i] == UInt8(ascii: "+")
        {
            i += 1
        }
        // Plain decimals (what keygate writes) without a string; anything else the slow way.
        var whole = 0.0
        var j = start
        var scale = 0.0
        var plain = true
        while j < i {
            let b = bytes[j]
            if b == UInt8(ascii: ".") {
                if scale != 0 { plain = false; break }
                scale = 1
            } else if b >= 0x30 && b <= 0x39 {
                whole = whole * 10 + Double(b - 0x30)
                if scale != 0 { scale *= 10 }
            } else {
                plain = false
                break
            }
            j += 1
        }
        if plain && i > start { return scale == 0 ? whole : whole / scale }
        guard i > start, let v = Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)) else {
            throw KeyRecordCodec.Failure("not a number")
        }
        return v
    }
}

/// Durations in log-spaced buckets (about 2% apart) from 1 µs to 1,000 s: bounded memory,
/// quantiles within a bucket's width.
struct LatencyHistogram {
    static let growth = 1.02
    static let bucketCount = Int((log(1e9) / log(growth)).rounded(.up)) + 2  // 1 µs … 1000 s in ms
    var counts: [Int] = []
    var total = 0

    mutating func add(_ ms: Double) {
        if counts.isEmpty { counts = [Int](repeating: 0, count: Self.bucketCount) }
        guard ms.isFinite else { return }
        let us = min(max(ms * 1000, 1), 1e15)
        let i = min(Int(log(us) / log(Self.growth)), Self.bucketCount - 1)
        counts[i] += 1
        total += 1
    }

    func quantile(_ q: Double) -> Double {
        guard total > 0 else { return 0 }
        let rank = Int((Double(total) * q).rounded(.up))
        var seen = 0
        for (i, c) in counts.enumerated() {
            seen += c
            if seen >= max(rank, 1) { return pow(Self.growth, Double(i) + 0.5) / 1000 }
        }
        return 0
    }
}

#if canImport(Glibc)
import Glibc
#endif
