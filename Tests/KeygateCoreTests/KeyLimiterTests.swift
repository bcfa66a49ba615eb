import Dispatch
import KeygateCore
import Synchronization
import XCTest

final class KeyLimiterTests: XCTestCase {
    func limiter(rate: String?, burst: Int? = nil, quota: String? = nil, limits: Policy.Limits = Policy.Limits()) -> KeyLimiter {
        var r = KeyRecord(id: "AAAAAAAA", name: "k", hash: KeyDigest(hashing: "x").stored, createdAt: "2026-01-01T00:00:00Z")
        r.rate = rate
        r.burst = burst
        r.quota = quota
        return KeyLimiter.make(record: r, limits: limits, previous: nil)!
    }

    func testGCRAOverTenVirtualSecondsAtTwiceTheRate() {
        let l = limiter(rate: "100/s", burst: 10)
        var allowed = 0
        // 200 requests a second for ten seconds, evenly spaced.
        for i in 0..<2000 {
            if case .allowed = l.take(nowNanos: Int64(i) * 5_000_000, wallSeconds: 0) { allowed += 1 }
        }
        // 100/s for 10 s plus the burst, within one request.
        XCTAssertEqual(Double(allowed), 1010, accuracy: 2)
    }

    func testExactUnderConcurrencyFromTwoThreads() {
        let l = limiter(rate: "1000/s", burst: 50)
        let allowed = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            var mine = 0
            for i in 0..<200_000 {
                // Both threads present the same virtual clock: 4,000 requests a second, 50 s.
                if case .allowed = l.take(nowNanos: Int64(i) * 250_000, wallSeconds: 0) { mine += 1 }
            }
            allowed.add(mine, ordering: .relaxed)
        }
        // 1,000/s over 50 virtual seconds plus the burst: two threads cannot double it.
        XCTAssertEqual(Double(allowed.load(ordering: .relaxed)), 50_050, accuracy: 50_050 * 0.02)
    }

    func testRetryAfterAndRemaining() {
        let l = limiter(rate: "1/s", burst: 2)
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: 0), .allowed(remaining: 1, resetSeconds: 1))
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: 0), .allowed(remaining: 0, resetSeconds: 2))
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: 0), .rateLimited(retryAfter: 1))
    }

    func testQuotaResetsWithThePeriod() {
        let l = limiter(rate: nil, quota: "2/day")
        let day: Int64 = 86400 * 20000 + 100
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: day), .allowed(remaining: 1, resetSeconds: 86300))
        _ = l.take(nowNanos: 0, wallSeconds: day)
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: day), .quotaExceeded(retryAfter: 86300))
        XCTAssertEqual(l.usedInPeriod(wallSeconds: day), 2)
        if case .allowed = l.take(nowNanos: 0, wallSeconds: day + 86400) {} else { XCTFail("a new day brings a new budget") }
    }

    func testMonthPeriods() {
        let jan31 = Timestamp.parseMillis("2026-01-31T23:59:59Z")! / 1000
        XCTAssertEqual(KeyLimiter.periodEnd(.month, jan31), Timestamp.parseMillis("2026-02-01T00:00:00Z")! / 1000)
        XCTAssertEqual(KeyLimiter.periodIndex(.month, jan31) + 1, KeyLimiter.periodIndex(.month, jan31 + 1))
    }

    func testReplicasShareTheRate() {
        var limits = Policy.Limits()
        limits.replicas = 4
        let l = limiter(rate: "400/s", limits: limits)
        XCTAssertEqual(l.limit, 100)
    }
}
