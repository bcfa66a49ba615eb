import Synchronization

/// A key's request rate and quota, enforced exactly across all event loops without a lock:
/// the rate as GCRA over one atomic "theoretical arrival time", the quota as one atomic word
/// holding (period, count). Both are compare-and-swap loops on the key's own state.
public final class KeyLimiter: Sendable {
    /// The numbers one gate enforces: the whole limit (`fleet`, while the fleet shares its
    /// counts), or its part of it (`alone`: divided by `limits.replicas`).
    public struct Terms: Sendable, Equatable {
        /// Nanoseconds between requests at the configured rate.
        public var emission: Int64 = 0
        /// How far ahead of now the arrival time may run: burst × emission.
        public var tolerance: Int64 = 0
        public var limit = 0
        public var quota: Int?
    }

    public let fleet: Terms
    public let alone: Terms
    public let quotaPeriod: QuotaText.Period?
    /// Whether a cluster sync reads `pendingRate`/`pendingQuota` (counted only then).
    public let clustered: Bool
    /// The key's counts, shared with the limiter the previous snapshot built for the same key,
    /// so that what loops still decide on the old snapshot during a reload counts here too.
    let counters: Counters
    static let countMask: Int64 = 0xFF_FFFF_FFFF

    final class Counters: Sendable {
        /// GCRA's theoretical arrival time, monotonic nanoseconds.
        let tat = Atomic<Int64>(0)
        /// Quota state: period index in the high 24 bits, requests in the low 40.
        let used = Atomic<Int64>(0)
        /// Requests allowed here since the cluster sync last took them.
        let pendingRate = Atomic<Int64>(0)
        /// The same for the quota, packed as `used` is (period index high, count low): a new
        /// period starts it again, so that requests of a period that is over are never pushed
        /// into the next one (Redis away over midnight would otherwise spend today's quota).
        let pendingQuota = Atomic<Int64>(0)
    }

    public enum Verdict: Equatable {
        case allowed(remaining: Int, resetSeconds: Int)
        case rateLimited(retryAfter: Int)
        case quotaExceeded(retryAfter: Int)
    }

    /// nil when the key has neither a rate nor a quota (and no policy default applies).
    public static func make(record: KeyRecord, limits: Policy.Limits, clustered: Bool = false, previous: KeyLimiter?) -> KeyLimiter? {
        let rateText = record.rate ?? limits.defaultRate
        let rate = rateText.flatMap(RateText.parse)
        let quota = record.quota.flatMap(QuotaText.parse)
        guard rate != nil || quota != nil else { return nil }
        let burstSetting = record.rate != nil ? record.burst : limits.defaultBurst
        func terms(_ replicas: Int) -> Terms {
            var t = Terms()
            if let rate {
                let perGate = max(1, rate.count / replicas)
                t.emission = rate.perMillis * 1_000_000 / Int64(perGate)
                let burst = min(max(1, burstSetting ?? (rate.perMillis == 1000 ? perGate : max(1, perGate / 60))), Bounds.burst)
                // Inputs are bounded where they are parsed; the product is still checked, so no
                // value that slips past a parser can trap the gate.
                let (product, overflow) = t.emission.multipliedReportingOverflow(by: Int64(burst))
                t.tolerance = overflow ? Int64.max / 4 : min(product, Int64.max / 4)
                t.limit = perGate
            }
            t.quota = quota.map { max(1, min($0.count, Bounds.quotaCount) / replicas) }
            return t
        }
        return KeyLimiter(
            fleet: terms(1), alone: terms(max(1, limits.replicas)), quotaPeriod: quota?.period, clustered: clustered,
            counters: previous?.counters ?? Counters())
    }

    init(fleet: Terms, alone: Terms, quotaPeriod: QuotaText.Period?, clustered: Bool, counters: Counters) {
        self.fleet = fleet
        self.alone = alone
        self.quotaPeriod = quotaPeriod
        self.clustered = clustered
        self.counters = counters
    }

    /// The terms in force for a fleet mode.
    @inline(__always)
    public func terms(_ mode: FleetState.Mode) -> Terms { mode == .shared ? fleet : alone }

    /// Takes one request at monotonic `nowNanos` (wall clock `wallSeconds` for quota periods),
    /// under the terms of `mode`.
    public func take(nowNanos: Int64, wallSeconds: Int64, mode: FleetState.Mode = .alone) -> Verdict {
        let t = terms(mode)
        let emission = t.emission, tolerance = t.tolerance
        var remaining = Int.max
        var reset = 0
        if emission > 0 {
            var old = counters.tat.load(ordering: .relaxed)
            while true {
                let base = max(old, nowNanos)
                let next = base + emission
                if next - nowNanos > tolerance {
                    let wait = next - nowNanos - tolerance
                    return .rateLimited(retryAfter: max(1, Int((wait + 999_999_999) / 1_000_000_000)))
                }
                let (exchanged, current) = counters.tat.compareExchange(expected: old, desired: next, ordering: .relaxed)
                if exchanged {
                    remaining = Int((tolerance - (next - nowNanos)) / emission)
                    reset = Int((next - nowNanos + 999_999_999) / 1_000_000_000)
                    break
                }
                old = current
            }
        }
        var quotaIndex: Int64 = 0
        if let quota = t.quota, let period = quotaPeriod {
            let index = Self.periodIndex(period, wallSeconds)
            quotaIndex = index
            var old = counters.used.load(ordering: .relaxed)
            while true {
                let count = (old >> 40) == index ? old & Self.countMask : 0
                if count >= Int64(quota) {
                    refund(emission)
                    return .quotaExceeded(retryAfter: Int(max(1, Self.periodEnd(period, wallSeconds) - wallSeconds)))
                }
                let (exchanged, current) = counters.used.compareExchange(expected: old, desired: index << 40 | (count + 1), ordering: .relaxed)
                if exchanged {
                    if emission == 0 {
                        remaining = quota - Int(count + 1)
                        reset = Int(Self.periodEnd(period, wallSeconds) - wallSeconds)
                    }
                    break
                }
                old = current
            }
        }
        if clustered {
            // Counted for the fleet: rate only while the counts are shared (a burst taken
            // alone is not replayed onto the others), quota always (it persists in Redis).
            if mode == .shared && emission > 0 { counters.pendingRate.add(1, ordering: .relaxed) }
            if t.quota != nil { addPendingQuota(1, index: quotaIndex) }
        }
        return .allowed(remaining: remaining == Int.max ? 0 : max(0, remaining), resetSeconds: reset)
    }

    // MARK: the cluster sync

    /// Requests allowed here since the last call, for the fleet's counters; the quota's only
    /// when they were counted in the period `wallSeconds` falls in.
    public func takePending(wallSeconds: Int64) -> (rate: Int64, quota: Int64) {
        let q = counters.pendingQuota.exchange(0, ordering: .relaxed)
        let quota = quotaPeriod.map { (q >> 40) == Self.periodIndex($0, wallSeconds) ? q & Self.countMask : 0 } ?? 0
        return (counters.pendingRate.exchange(0, ordering: .relaxed), quota)
    }

    /// Quota counts a failed sync (at `wallSeconds`) could not push, kept for the next one
    /// unless their period is over by then.
    public func giveBack(quota: Int64, wallSeconds: Int64) {
        guard quota > 0, let period = quotaPeriod else { return }
        addPendingQuota(quota, index: Self.periodIndex(period, wallSeconds))
    }

    /// Adds `n` to the pending quota count of period `index`. A count of another period is
    /// replaced when it is older; counts for an older period than the one pending are dropped.
    private func addPendingQuota(_ n: Int64, index: Int64) {
        var old = counters.pendingQuota.load(ordering: .relaxed)
        while true {
            let next: Int64
            if old & Self.countMask == 0 || (old >> 40) < index {
                next = index << 40 | n
            } else if (old >> 40) == index {
                next = old + n
            } else {
                return
            }
            let (done, current) = counters.pendingQuota.compareExchange(expected: old, desired: next, ordering: .relaxed)
            if done { return }
            old = current
        }
    }

    /// Requests not yet taken by `takePending`, counted on top of the fleet's total.
    public var pendingQuotaCount: Int64 { counters.pendingQuota.load(ordering: .relaxed) & Self.countMask }

    /// Other gates allowed `count` requests of this key since the last sync: they use up this
    /// gate's arrival time as if they had come here, so the fleet as a whole keeps the rate.
    /// Never runs further ahead than a minute.
    public func absorb(others count: Int64, nowNanos: Int64) {
        let e = fleet.emission
        guard count > 0, e > 0 else { return }
        let (advance, overflow) = e.multipliedReportingOverflow(by: count)
        let cap = nowNanos + fleet.tolerance + 60_000_000_000
        var old = counters.tat.load(ordering: .relaxed)
        while true {
            let base = max(old, nowNanos)
            let next = overflow || advance > cap - base ? cap : base + advance
            let (done, current) = counters.tat.compareExchange(expected: old, desired: max(next, old), ordering: .relaxed)
            if done { return }
            old = current
        }
    }

    /// The fleet has counted `total` requests of this key in the current quota period: this
    /// gate's count never falls below it (plus what it has not pushed yet).
    public func raiseQuotaCount(to total: Int64, wallSeconds: Int64) {
        guard let period = quotaPeriod else { return }
        let index = Self.periodIndex(period, wallSeconds)
        // Clamped before the sum: a count from Redis may be anything up to Int64.max.
        let bound = Int64(Bounds.quotaCount)
        let p = counters.pendingQuota.load(ordering: .relaxed)
        let pending = (p >> 40) == index ? p & Self.countMask : 0
        let want = min(min(max(total, 0), bound) + pending, bound)
        var old = counters.used.load(ordering: .relaxed)
        while true {
            // A total read before the period turned says nothing about the new one.
            if (old >> 40) > index { return }
            let count = (old >> 40) == index ? old & Self.countMask : 0
            if count >= want && (old >> 40) == index { return }
            let (done, current) = counters.used.compareExchange(expected: old, desired: index << 40 | max(count, want), ordering: .relaxed)
            if done { return }
            old = current
        }
    }

    /// A request refused by the quota gives back its rate slot.
    private func refund(_ e: Int64) {
        if e > 0 { counters.tat.subtract(e, ordering: .relaxed) }
    }

    /// Requests counted in the current period.
    public func usedInPeriod(wallSeconds: Int64) -> Int {
        guard let p = quotaPeriod else { return 0 }
        let v = counters.used.load(ordering: .relaxed)
        return (v >> 40) == Self.periodIndex(p, wallSeconds) ? Int(v & Self.countMask) : 0
    }

    /// Restores a count saved by a previous run, when it belongs to the current period.
    public func restore(periodIndex: Int64, count: Int64) {
        counters.used.store(periodIndex << 40 | count, ordering: .relaxed)
    }

    /// Days since the epoch, or months since January 1970 (UTC).
    public static func periodIndex(_ p: QuotaText.Period, _ wallSeconds: Int64) -> Int64 {
        let day = wallSeconds / 86400
        switch p {
        case .day: return day
        case .month:
            let (y, m, _) = Timestamp.civil(fromDays: day)
            return (y - 1970) * 12 + Int64(m - 1)
        }
    }

    /// Unix seconds when the current period ends.
    public static func periodEnd(_ p: QuotaText.Period, _ wallSeconds: Int64) -> Int64 {
        let day = wallSeconds / 86400
        switch p {
        case .day: return (day + 1) * 86400
        case .month:
            let (y, m, _) = Timestamp.civil(fromDays: day)
            let (ny, nm) = m == 12 ? (y + 1, 1) : (y, m + 1)
            return Timestamp.days(fromCivil: ny, nm, 1) * 86400
        }
    }
}
