import Dispatch
import KeygateCore
import Synchronization
import XCTest

final class KeyLimiterTests: XCTestCase {
    func limiter(rate: String?, burst: Int? = nil, quota: String? = nil, limits: Policy.Limits = Policy.Limits(), clustered: Bool = false) -> KeyLimiter {
        var r = KeyRecord(id: "AAAAAAAA", name: "k", hash: KeyDigest(hashing: "x").stored, createdAt: "2026-01-01T00:00:00Z")
        r.rate = rate
        r.burst = burst
        r.quota = quota
        return KeyLimiter.make(record: r, limits: limits, clustered: clustered, previous: nil)!
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
        // Two threads hammer one key on the real monotonic clock: together they get the rate,
        // not twice it.
        let l = limiter(rate: "10000/s", burst: 10)
        let allowed = Atomic<Int>(0)
        let start = DispatchTime.now().uptimeNanoseconds
        let duration: UInt64 = 300_000_000
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            var mine = 0
            while true {
                let now = DispatchTime.now().uptimeNanoseconds
                if now - start >= duration { break }
                if case .allowed = l.take(nowNanos: Int64(now), wallSeconds: 0) { mine += 1 }
            }
            allowed.add(mine, ordering: .relaxed)
        }
        let expected = 10_000.0 * Double(duration) / 1e9 + 10
        XCTAssertEqual(Double(allowed.load(ordering: .relaxed)), expected, accuracy: expected * 0.02)
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
        XCTAssertEqual(l.terms(.alone).limit, 100)
        XCTAssertEqual(l.terms(.downLocal).limit, 100)
        // While the fleet shares its counts, each gate enforces the whole limit.
        XCTAssertEqual(l.terms(.shared).limit, 400)
    }

    func testOtherGatesUseUpTheRate() {
        let l = limiter(rate: "10/s", burst: 10)
        // Others took 10 requests' worth: this gate has nothing left for a second.
        l.absorb(others: 10, nowNanos: 0)
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: 0, mode: .shared), .rateLimited(retryAfter: 1))
        if case .allowed = l.take(nowNanos: 100_000_000, wallSeconds: 0, mode: .shared) {} else { XCTFail("one emission later a request fits") }
        // Never more than a minute ahead, however much the others report.
        l.absorb(others: 1 << 40, nowNanos: 0)
        if case .allowed = l.take(nowNanos: 62_000_000_000, wallSeconds: 62, mode: .shared) {} else { XCTFail("capped at a minute") }
    }

    func testCountsAtTheEndsOfTheRangeDoNotTrap() {
        // Counts come from a shared Redis: any 64-bit number may arrive.
        let l = limiter(rate: "1000/s", burst: 1)
        // The product fits, the sum with the clock would not: held at a minute ahead.
        l.absorb(others: Int64.max / 1_000_000, nowNanos: 1 << 62)
        l.absorb(others: .max, nowNanos: 1 << 62)
        if case .rateLimited(let after) = l.take(nowNanos: 1 << 62, wallSeconds: 0, mode: .shared) {
            XCTAssert((60...61).contains(after), "\(after) s")
        } else { XCTFail("others' requests use up the rate") }
        let day: Int64 = 86400 * 20000
        let q = limiter(rate: nil, quota: "10/day", clustered: true)
        q.raiseQuotaCount(to: .max, wallSeconds: day)
        XCTAssertEqual(q.take(nowNanos: 0, wallSeconds: day, mode: .shared), .quotaExceeded(retryAfter: 86400))
        let other = limiter(rate: nil, quota: "10/day", clustered: true)
        _ = other.take(nowNanos: 0, wallSeconds: day, mode: .shared)
        other.raiseQuotaCount(to: .min, wallSeconds: day)
        XCTAssertEqual(other.usedInPeriod(wallSeconds: day), 1)
    }

    func testFleetQuotaCountsNeverGoBack() {
        let l = limiter(rate: nil, quota: "10/day", clustered: true)
        let day: Int64 = 86400 * 20000
        _ = l.take(nowNanos: 0, wallSeconds: day, mode: .shared)
        XCTAssertEqual(l.takePending(wallSeconds: day).quota, 1)
        l.raiseQuotaCount(to: 9, wallSeconds: day)
        XCTAssertEqual(l.usedInPeriod(wallSeconds: day), 9)
        l.raiseQuotaCount(to: 3, wallSeconds: day)
        XCTAssertEqual(l.usedInPeriod(wallSeconds: day), 9)
        _ = l.take(nowNanos: 0, wallSeconds: day, mode: .shared)
        XCTAssertEqual(l.take(nowNanos: 0, wallSeconds: day, mode: .shared), .quotaExceeded(retryAfter: 86400))
        // A failed sync keeps its counts for the next one.
        let pending = l.takePending(wallSeconds: day).quota
        XCTAssertEqual(pending, 1)
        l.giveBack(quota: pending, wallSeconds: day)
        XCTAssertEqual(l.pendingQuotaCount, 1)
    }

    func testCountsOfAPeriodThatIsOverAreNotPushedIntoTheNext() {
        // Redis was away over midnight: yesterday's unpushed requests must not use up today.
        let l = limiter(rate: nil, quota: "10/day", clustered: true)
        let day: Int64 = 86400 * 20000
        for _ in 0..<8 { _ = l.take(nowNanos: 0, wallSeconds: day + 86000, mode: .downLocal) }
        let late = l.takePending(wallSeconds: day + 86300)
        XCTAssertEqual(late.quota, 8)
        l.giveBack(quota: late.quota, wallSeconds: day + 86300)
        XCTAssertEqual(l.takePending(wallSeconds: day + 86400 + 7200).quota, 0, "yesterday's count went into today's")
        // Given back after the period turned: dropped, and today's counts are kept apart.
        _ = l.take(nowNanos: 0, wallSeconds: day + 86400 + 7300, mode: .shared)
        l.giveBack(quota: 5, wallSeconds: day + 86000)
        XCTAssertEqual(l.takePending(wallSeconds: day + 86400 + 7400).quota, 1)
        // The fleet's total for today is raised by today's unpushed requests only.
        _ = l.take(nowNanos: 0, wallSeconds: day + 86400 + 7500, mode: .shared)
        l.raiseQuotaCount(to: 3, wallSeconds: day + 86400 + 7500)
        XCTAssertEqual(l.usedInPeriod(wallSeconds: day + 86400 + 7500), 4)
        // A sync that read the old day's total just before midnight, applied after requests of
        // the new day were counted, must not put the count back into the old day.
        l.raiseQuotaCount(to: 9, wallSeconds: day + 86399)
        XCTAssertEqual(l.usedInPeriod(wallSeconds: day + 86400 + 7600), 4)
    }

    func testAPushedChangeStandsUntilTheCopyCatchesUp() {
        let at: Int64 = 1_795_456_800_500  // 2026-11-23T18:00:00.500Z
        let disable = PushedChange(status: .disabled, atMillis: at)
        let revoke = PushedChange(status: .revoked, atMillis: at)
        func copy(_ status: KeyRecord.Status, updated: String) -> KeyRecord {
            Fixtures.record("kg_pushed") {
                $0.status = status
                $0.updated_at = updated
            }
        }
        // Not in the copy yet, or a copy from before the change: the change stands.
        XCTAssertTrue(disable.stands(over: nil))
        XCTAssertTrue(disable.stands(over: copy(.active, updated: "2026-11-23T17:59:59Z")))
        // The same second cannot be told apart: it stands, refusing.
        XCTAssertTrue(disable.stands(over: copy(.active, updated: "2026-11-23T18:00:00Z")))
        // The copy shows the change, or something later: the copy decides.
        XCTAssertFalse(disable.stands(over: copy(.disabled, updated: "2026-11-23T18:00:00Z")))
        XCTAssertFalse(disable.stands(over: copy(.active, updated: "2026-11-23T18:00:01Z")))
        XCTAssertFalse(revoke.stands(over: copy(.revoked, updated: "2026-11-23T17:00:00Z")))
        XCTAssertTrue(revoke.stands(over: copy(.disabled, updated: "2026-11-23T17:00:00Z")))
        XCTAssertTrue(revoke.stands(over: copy(.active, updated: "not a time")))
        // Nothing undoes a revocation or a delete: a copy dated later (another host's clock
        // ahead) does not lift them.
        XCTAssertTrue(revoke.stands(over: copy(.active, updated: "2026-11-23T19:00:00Z")))
        XCTAssertTrue(PushedChange(status: .deleted, atMillis: at).stands(over: copy(.active, updated: "2026-11-23T19:00:00Z")))
    }

    func testPushedChangesForUnknownIdsAreBoundedAndKnownOnesKept() {
        var changes: [String: PushedChange] = [:]
        let known: Set<String> = ["known-0", "known-1"]
        for id in known { changes[id] = PushedChange(status: .revoked, atMillis: 0) }
        for i in 0..<2_000 {
            PushedChange.makeRoom(in: &changes, limit: 100) { known.contains($0) }
            changes["u\(i)"] = PushedChange(status: .disabled, atMillis: Int64(1 + i))
        }
        XCTAssertLessThanOrEqual(changes.count, 100)
        // The known keys' revocations, though oldest, stay; of the unknown, the newest stay.
        XCTAssertEqual(changes["known-0"]?.status, .revoked)
        XCTAssertEqual(changes["known-1"]?.status, .revoked)
        XCTAssertNotNil(changes["u1999"])
        XCTAssertNil(changes["u0"])
    }

    func testRequestsDecidedOnTheOldSnapshotDuringAReloadStillCount() {
        // A reload builds new limiters while loops still decide on the old snapshot for a
        // moment: what they allow then must count against the new limiter too.
        var r = KeyRecord(id: "AAAAAAAA", name: "k", hash: KeyDigest(hashing: "x").stored, createdAt: "2026-01-01T00:00:00Z")
        r.rate = "10/s"
        r.burst = 5
        r.quota = "8/day"
        let day: Int64 = 86400 * 20000
        let old = KeyLimiter.make(record: r, limits: Policy.Limits(), clustered: true, previous: nil)!
        _ = old.take(nowNanos: 0, wallSeconds: day, mode: .shared)
        let new = KeyLimiter.make(record: r, limits: Policy.Limits(), clustered: true, previous: old)!
        for _ in 0..<4 { _ = old.take(nowNanos: 0, wallSeconds: day, mode: .shared) }
        XCTAssertEqual(new.usedInPeriod(wallSeconds: day), 5)
        XCTAssertEqual(new.takePending(wallSeconds: day).quota, 5)
        // The rate's burst of 5 is spent across both.
        XCTAssertEqual(new.take(nowNanos: 0, wallSeconds: day, mode: .shared), .rateLimited(retryAfter: 1))
        // So is the last use.
        let before = KeyEntry(record: r, scopes: [:])
        let after = KeyEntry(record: r, scopes: [:], previous: before)
        before.markUsed(1_795_456_800)
        XCTAssertEqual(after.lastUsed, 1_795_456_800)
    }
}
