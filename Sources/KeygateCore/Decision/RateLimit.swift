import Synchronization

/// A key's request rate and quota, enforced exactly across all event loops without a lock:
/// the rate as GCRA over one atomic "theoretical arrival time", the quota as one atomic word
/// holding (period, count). Both are compare-and-swap loops on the key's own state.
public final class KeyLimiter: Sendable {
    /// Nanoseconds between requests at the configured rate.
    public let emission: Int64
    /// How far ahead of now the arrival time may run: burst × emission.
    public let tolerance: Int64
    public let limit: Int
    public let quota: Int?
    public let quotaPeriod: QuotaText.Period?
    /// GCRA's theoretical arrival time, monotonic nanoseconds.
    let tat: Atomic<Int64>
    /// Quota state: period index in the high 24 bits, requests in the low 40.
    let used: Atomic<Int64>

    public enum Verdict: Equatable {
        case allowed(remaining: Int, resetSeconds: Int)
        case rateLimited(retryAfter: Int)
        case quotaExceeded(retryAfter: Int)
    }

    /// nil when the key has neither a rate nor a quota (and no policy default applies).
    public static func make(record: KeyRecord, limits: Policy.Limits, previous: KeyLimiter?) -> KeyLimiter? {
        let rateText = record.rate ?? limits.defaultRate
        let rate = rateText.flatMap(RateText.parse)
        let quota = record.quota.flatMap(QuotaText.parse)
        guard rate != nil || quota != nil else { return nil }
        let replicas = max(1, limits.replicas)
        var emission: Int64 = 0
        var burst = 0
        var limit = 0
        if let rate {
            let perGate = max(1, rate.count / replicas)
            emission = rate.perMillis * 1_000_000 / Int64(perGate)
            burst = max(1, (record.rate != nil ? record.burst : limits.defaultBurst) ?? (rate.perMillis == 1000 ? perGate : max(1, perGate / 60)))
            burst = min(burst, Bounds.burst)
            limit = perGate
        }
        // Inputs are bounded where they are parsed; the product is still checked, so no value
        // that slips past a parser can trap the gate.
        let (product, overflow) = emission.multipliedReportingOverflow(by: Int64(burst))
        let tolerance = overflow ? Int64.max / 4 : min(product, Int64.max / 4)
        let quotaCount = quota.map { max(1, min($0.count, Bounds.quotaCount) / replicas) }
        return KeyLimiter(
            emission: emission, tolerance: tolerance, limit: limit, quota: quotaCount, quotaPeriod: quota?.period,
            tat: previous?.tat.load(ordering: .relaxed) ?? 0, used: previous?.used.load(ordering: .relaxed) ?? 0)
    }

    init(emission: Int64, tolerance: Int64, limit: Int, quota: Int?, quotaPeriod: QuotaText.Period?, tat: Int64, used: Int64) {
        self.emission = emission
        self.tolerance = tolerance
        self.limit = limit
        self.quota = quota
        self.quotaPeriod = quotaPeriod
        self.tat = Atomic(tat)
        self.used = Atomic(used)
    }

    /// Takes one request at monotonic `nowNanos` (wall clock `wallSeconds` for quota periods).
    public func take(nowNanos: Int64, wallSeconds: Int64) -> Verdict {
        var remaining = Int.max
        var reset = 0
        if emission > 0 {
            var old = tat.load(ordering: .relaxed)
            while true {
                let base = max(old, nowNanos)
                let next = base + emission
                if next - nowNanos > tolerance {
                    let wait = next - nowNanos - tolerance
                    return .rateLimited(retryAfter: max(1, Int((wait + 999_999_999) / 1_000_000_000)))
                }
                let (exchanged, current) = tat.compareExchange(expected: old, desired: next, ordering: .relaxed)
                if exchanged {
                    remaining = Int((tolerance - (next - nowNanos)) / emission)
                    reset = Int((next - nowNanos + 999_999_999) / 1_000_000_000)
                    break
                }
                old = current
            }
        }
        if let quota, let period = quotaPeriod {
            let index = Self.periodIndex(period, wallSeconds)
            var old = used.load(ordering: .relaxed)
            while true {
                let count = (old >> 40) == index ? old & 0xFF_FFFF_FFFF : 0
                if count >= Int64(quota) {
                    refund(emission)
                    return .quotaExceeded(retryAfter: Int(max(1, Self.periodEnd(period, wallSeconds) - wallSeconds)))
                }
                let (exchanged, current) = used.compareExchange(expected: old, desired: index << 40 | (count + 1), ordering: .relaxed)
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
        return .allowed(remaining: remaining == Int.max ? 0 : max(0, remaining), resetSeconds: reset)
    }

    /// A request refused by the quota gives back its rate slot.
    private func refund(_ e: Int64) {
        if e > 0 { tat.subtract(e, ordering: .relaxed) }
    }

    /// Requests counted in the current period.
    public func usedInPeriod(wallSeconds: Int64) -> Int {
        guard let p = quotaPeriod else { return 0 }
        let v = used.load(ordering: .relaxed)
        return (v >> 40) == Self.periodIndex(p, wallSeconds) ? Int(v & 0xFF_FFFF_FFFF) : 0
    }

    /// Restores a count saved by a previous run, when it belongs to the current period.
    public func restore(periodIndex: Int64, count: Int64) {
        used.store(periodIndex << 40 | count, ordering: .relaxed)
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
