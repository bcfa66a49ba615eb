import FoundationEssentials
import Glibc
import Synchronization

/// What happened to one key in one hour (or one day): counts, and the same requests by denial
/// reason, status class, route and country. Names past `maxNames` of a kind are counted under
/// `"other"`, so a client that walks random paths cannot grow a cell without bound.
public struct RollupCell: Sendable, Equatable {
    public var requests = 0
    public var denied = 0
    public var reasons: [String: Int] = [:]
    public var statuses: [String: Int] = [:]
    public var routes: [String: Int] = [:]
    public var countries: [String: Int] = [:]
    static let maxNames = 50

    public init() {}

    public mutating func add(_ o: RollupCell) {
        requests += o.requests
        denied += o.denied
        for (k, v) in o.reasons { Self.bump(&reasons, k, v) }
        for (k, v) in o.statuses { Self.bump(&statuses, k, v) }
        for (k, v) in o.routes { Self.bump(&routes, k, v) }
        for (k, v) in o.countries { Self.bump(&countries, k, v) }
    }

    static func bump(_ d: inout [String: Int], _ k: String, _ n: Int) {
        if d[k] != nil || d.count < maxNames { d[k, default: 0] += n } else { d["other", default: 0] += n }
    }

    var json: JSONValue {
        func counts(_ m: [String: Int]) -> JSONValue { .object(m.mapValues { JSONValue($0) }) }
        return [
            "requests": JSONValue(requests), "denied": JSONValue(denied), "reasons": counts(reasons), "statuses": counts(statuses),
            "routes": counts(routes), "countries": counts(countries),
        ]
    }

    /// A cell read back from the file. Counts are held to `Bounds.quotaCount` (a quota's most,
    /// far above any hour's traffic), so that a window's sum in the console cannot overflow
    /// whatever the file says.
    init?(json o: [String: JSONValue]) {
        guard let r = o["requests"]?.int64, let d = o["denied"]?.int64, r >= 0, d >= 0 else { return nil }
        func count(_ n: Int64) -> Int { Int(min(n, Int64(Bounds.quotaCount))) }
        func counts(_ v: JSONValue?) -> [String: Int] {
            var out: [String: Int] = [:]
            for (k, n) in v?.object ?? [:] { if let i = n.int64, i >= 0 { out[k] = count(i) } }
            return out
        }
        requests = count(r)
        denied = count(d)
        reasons = counts(o["reasons"])
        statuses = counts(o["statuses"])
        routes = counts(o["routes"])
        countries = counts(o["countries"])
    }
}

/// One event loop's counts for the current hour, handed to `UsageRollups` about once a second.
/// Touched only by its loop: no lock per request.
public struct RollupBatch {
    public private(set) var hour: Int64 = 0
    public private(set) var cells: [String: RollupCell] = [:]
    public var isEmpty: Bool { cells.isEmpty }

    public init() {}

    /// Counts a usage event (keyed requests only: one without a key belongs to no key).
    /// Returns the finished batch when the event starts a new hour.
    public mutating func add(_ e: UsageEvent) -> RollupBatch? {
        guard let key = e.key else { return nil }
        let h = e.tsMillis / 3_600_000
        var finished: RollupBatch?
        if h != hour {
            if !cells.isEmpty { finished = self }
            cells = [:]
            hour = h
        }
        let id = key.record.id
        var cell = cells.removeValue(forKey: id) ?? RollupCell()
        cell.requests += 1
        if !e.allowed, let r = e.reason {
            cell.denied += 1
            RollupCell.bump(&cell.reasons, r.rawValue, 1)
        }
        let cls = e.status / 100
        RollupCell.bump(&cell.statuses, cls >= 1 && cls <= 5 ? "\(cls)xx" : "other", 1)
        RollupCell.bump(&cell.routes, UsageReport.routeName(e.method, e.path), 1)
        RollupCell.bump(&cell.countries, e.country == 0 ? "-" : CountryCode.unpack(e.country), 1)
        cells[id] = cell
        return finished
    }

    /// Hands the counts over and starts empty (same hour).
    public mutating func take() -> RollupBatch {
        let b = self
        cells = [:]
        return b
    }
}

/// Per-key usage by hour (the last 48) and by day (the last 31), in memory, for the console's
/// charts; saved as `keys.rollups.json` in `state_dir` so a restart keeps them. The usage log
/// stays the complete record; this is its summary, kept so that a 30-day chart reads no log.
public final class UsageRollups: Sendable {
    struct Storage {
        var hourly: [String: [Int64: RollupCell]] = [:]
        var daily: [String: [Int64: RollupCell]] = [:]
    }
    static let keepHours: Int64 = 48
    static let keepDays: Int64 = 31
    private let storage = Mutex(Storage())
    public let path: String?

    public init(path: String?) {
        self.path = path
        if let path, let data = FileManager.default.contents(atPath: path) { absorb(data) }
    }

    /// Cells read from a file's bytes, with no file to save to.
    public init(parsing bytes: some Collection<UInt8>) {
        path = nil
        absorb(bytes)
    }

    /// The keys that have any cell.
    public var keyIDs: [String] {
        storage.withLock { s in Array(Set(s.hourly.keys).union(s.daily.keys)) }
    }

    public func merge(_ b: RollupBatch) {
        guard !b.isEmpty else { return }
        let day = b.hour / 24
        storage.withLock { s in
            for (id, cell) in b.cells {
                s.hourly[id, default: [:]][b.hour, default: RollupCell()].add(cell)
                s.daily[id, default: [:]][day, default: RollupCell()].add(cell)
            }
        }
    }

    /// Buckets oldest first: `count` hours (or days) ending with the current one.
    public func series(_ id: String, hourly: Bool, count: Int, nowMillis: Int64) -> [(start: Int64, cell: RollupCell)] {
        let unit: Int64 = hourly ? 3_600_000 : 86_400_000
        let last = nowMillis / unit
        let cells = storage.withLock { s in (hourly ? s.hourly[id] : s.daily[id]) ?? [:] }
        return (0..<Int64(count)).map { i in
            let index = last - Int64(count) + 1 + i
            return (index * unit, cells[index] ?? RollupCell())
        }
    }

    /// Requests per hour over the last 24 hours, for every key with any.
    public func last24Hours(nowMillis: Int64) -> [String: [Int]] {
        let last = nowMillis / 3_600_000
        return storage.withLock { s in
            var out: [String: [Int]] = [:]
            for (id, hours) in s.hourly {
                var row = [Int](repeating: 0, count: 24)
                var any = false
                for (h, c) in hours where h > last - 24 && h <= last {
                    row[Int(h - (last - 23))] += c.requests
                    any = true
                }
                if any { out[id] = row }
            }
            return out
        }
    }

    public func prune(nowMillis: Int64) {
        let hour = nowMillis / 3_600_000
        let day = nowMillis / 86_400_000
        storage.withLock { s in
            for id in Array(s.hourly.keys) {
                s.hourly[id] = s.hourly[id]!.filter { $0.key > hour - Self.keepHours }
                if s.hourly[id]!.isEmpty { s.hourly[id] = nil }
            }
            for id in Array(s.daily.keys) {
                s.daily[id] = s.daily[id]!.filter { $0.key > day - Self.keepDays }
                if s.daily[id]!.isEmpty { s.daily[id] = nil }
            }
        }
    }

    /// Writes the file (atomically); off the loops.
    public func save() throws {
        guard let path else { return }
        prune(nowMillis: Timestamp.nowMillis())
        guard let data = render() else { return }
        try KeyStoreFile.writeAtomically(data, to: path, mode: 0o600)
    }

    /// The file's text.
    public func render() -> [UInt8]? {
        let object: JSONValue = storage.withLock { s in
            func encode(_ m: [String: [Int64: RollupCell]]) -> JSONValue {
                .object(m.mapValues { cells in .object(Dictionary(uniqueKeysWithValues: cells.map { (String($0.key), $0.value.json) })) })
            }
            return ["version": 1, "hourly": encode(s.hourly), "daily": encode(s.daily)]
        }
        return object.encoded()
    }

    /// Takes the cells of a file's bytes; what is not a cell is left out.
    private func absorb(_ data: some Collection<UInt8>) {
        guard let o = JSONValue.parseObject(data) else { return }
        func decode(_ v: JSONValue?) -> [String: [Int64: RollupCell]] {
            var out: [String: [Int64: RollupCell]] = [:]
            for (id, cells) in v?.object ?? [:] {
                for (k, c) in cells.object ?? [:] {
                    if let i = Int64(k), let fields = c.object, let cell = RollupCell(json: fields) { out[id, default: [:]][i] = cell }
                }
            }
            return out
        }
        storage.withLock { s in
            s.hourly = decode(o["hourly"])
            s.daily = decode(o["daily"])
        }
    }

    /// `keys.rollups.json` in the policy's `state_dir`.
    public static func path(for policy: Policy) -> String {
        PathText.join(policy.stateDir, "keys.rollups.json")
    }
}
