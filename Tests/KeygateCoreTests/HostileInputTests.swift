import Foundation
import KeygateCore
import XCTest

/// Files and flags written by someone else: every bad value is an error with a reason, never a
/// trap.
final class HostileInputTests: XCTestCase {
    func decode(_ line: String) throws -> KeyRecord {
        let bytes = Array(line.utf8)
        return try bytes.withUnsafeBufferPointer { p throws(KeyRecordCodec.Failure) in try KeyRecordCodec.decode(p) }
    }

    func record(_ extra: String) -> String {
        #"{"id":"AAAAAAAA","name":"n","hash":"sha256:"# + String(repeating: "a", count: 64)
            + #"","status":"active","created_at":"2026-01-01T00:00:00Z""# + extra + "}"
    }

    func testLoneSurrogatesAreRefused() {
        for escape in [#"\uD800"#, #"\uD800\u0041"#, #"\uDC00"#, #"\uD800\uD800"#, #"\uDBFF\uE000"#] {
            XCTAssertThrowsError(try decode(record(#","owner":"a"# + escape + #"b""#)), escape)
        }
        // A proper pair still decodes.
        XCTAssertEqual(try decode(record(#","owner":"\uD83D\uDE00""#)).owner, "😀")
    }

    func testLimitsOutOfBoundsMakeTheLineInvalid() {
        XCTAssertThrowsError(try decode(record(#","rate":"1/h","burst":3000000000"#)))
        XCTAssertThrowsError(try decode(record(#","rate":"99999999999999999/s""#)))
        XCTAssertThrowsError(try decode(record(#","quota":"9999999999999/day""#)))
        XCTAssertThrowsError(try decode(record(#","rate":"-5/s""#)))
        XCTAssertThrowsError(try decode(record(#","countries":{"allow":["XX"],"deny":[]}"#)))
        XCTAssertNoThrow(try decode(record(#","rate":"1/h","burst":1000000,"quota":"1000000000000/month""#)))
    }

    func testTheLimiterNeverOverflows() {
        var r = KeyRecord(id: "AAAAAAAA", name: "k", hash: KeyDigest(hashing: "x").stored, createdAt: "2026-01-01T00:00:00Z")
        r.rate = "1/h"
        r.burst = Int.max
        let l = KeyLimiter.make(record: r, limits: Policy.Limits(), previous: nil)!
        if case .allowed = l.take(nowNanos: Int64.max / 8, wallSeconds: 0) {} else { XCTFail("a huge burst allows") }
    }

    func testCLIBoundsAreOneLineErrors() throws {
        let dir = NSTemporaryDirectory() + "kg-bounds-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let policy = try PolicyLoader.parse("workers: 1\n", file: dir + "/keygate.yaml", displayName: "keygate.yaml")
        let m = KeyManager(policy: policy, actor: "test")
        func create(_ f: (inout KeySettings) -> Void) -> String? {
            var s = KeySettings()
            s.name = "k"
            f(&s)
            do {
                _ = try m.create(s)
                return nil
            } catch {
                return error.description
            }
        }
        XCTAssertNotNil(create { $0.rate = "1/h"; $0.burst = 3_000_000_000 })
        XCTAssertNotNil(create { $0.rate = "2000000000/s" })
        XCTAssertNotNil(create { $0.quota = "2000000000000/day" })
        XCTAssertNotNil(create { $0.ttl = "999999999w" })
        XCTAssertNil(create { $0.rate = "1/h"; $0.burst = 1_000_000 })
        // Text that reaches terminals, headers and the console carries no controls.
        XCTAssertEqual(create { $0.name = "evil\u{1b}]0;title\u{07}" }, "--name must not contain control characters")
        XCTAssertEqual(create { $0.owner = "a\nb" }, "--owner must not contain control characters")
        XCTAssertEqual(create { $0.description = "x\u{2028}y" }, "--description must not contain control characters")
        XCTAssertEqual(create { $0.owner = String(repeating: "o", count: 201) }, "--owner must be at most 200 characters")
        XCTAssertNil(create { $0.name = "Zoë's key"; $0.owner = "ops@example.com"; $0.description = "Ünïcode is fine" })
    }

    func testPolicyNumbersAreBounded() {
        for yaml in [
            "limits: {default_burst: 3000000000}\n", "limits: {max_header_bytes: 99999999999}\n", "limits: {replicas: 100000}\n",
            "timeouts: {idle: 999999999w}\n", "timeouts: {header_read: 30d}\n", "limits: {max_connections: 99999999999999999999}\n",
        ] {
            XCTAssertThrowsError(try PolicyLoader.parse(yaml, file: "/tmp/k/keygate.yaml", displayName: "keygate.yaml"), yaml) { error in
                XCTAssertTrue("\(error)".contains("keygate.yaml:1:"), "\(error)")
            }
        }
    }

    func testUsageReportSkipsAbsurdNumbers() {
        var report = UsageReport(pivot: .key, filter: UsageReport.Filter())
        let good = #"{"ts":"2026-11-23T18:00:00.123Z","decision":"allow","reason":null,"status":200,"key_id":"k","method":"GET","path":"/","duration_ms":1.5}"#
        let lines = [
            good,
            good.replacingOccurrences(of: "1.5}", with: "1e999}"),
            good.replacingOccurrences(of: "1.5}", with: "NaN}"),
            good.replacingOccurrences(of: "1.5}", with: "-1}"),
            good.replacingOccurrences(of: "1.5}", with: "99999999999999999999999999999999}"),
            good.replacingOccurrences(of: "200", with: "99999999999999999999999"),
            good.replacingOccurrences(of: "1.5}", with: "1e308}"),
        ]
        for l in lines {
            let bytes = Array(l.utf8)
            bytes.withUnsafeBufferPointer { report.add(line: $0) }
        }
        XCTAssertEqual(report.lines, 7)
        XCTAssertEqual(report.malformed, 4)
        XCTAssertEqual(report.groups["k"]?.requests, 3)
        XCTAssertTrue(report.groups["k"]!.p99.isFinite)
    }

    func testAStateFileThatDoesNotParseIsSetAsideNotReplaced() throws {
        let dir = NSTemporaryDirectory() + "kg-state-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/keys.state.json"
        try Data("{\"quota_used\": {\"A\": {\"period\": \"2026-11-30\", \"used\": 4".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try KeyStateFile.load(path))
        var seen = KeyStateFile.State()
        seen.quota["A"] = KeyStateFile.QuotaUse(period: "2026-11-30", used: 7)
        XCTAssertThrowsError(try KeyStateFile.merge(seen, into: path)) { error in
            XCTAssertTrue("\(error)".contains("corrupt"), "\(error)")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertTrue(files.contains { $0.hasPrefix("keys.state.json.corrupt-") }, "\(files)")
        XCTAssertEqual(try KeyStateFile.load(path).quota["A"]?.used, 7)
        // Counts beyond what a quota can hold are clamped.
        try Data("{\"quota_used\": {\"A\": {\"period\": \"p\", \"used\": 1e300}}}".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try KeyStateFile.load(path).quota["A"]?.used, Int64(Bounds.quotaCount))
        // Names and periods an editor put in are written back escaped, so the file still parses.
        try Data(#"{"last_used": {"a\"b\n": "2026-01-01T00:00:00Z", "old": "1223-01-01T00:00:00Z"}, "quota_used": {"q\\": {"period": "p\"", "used": 1}}}"#.utf8)
            .write(to: URL(fileURLWithPath: path))
        var more = KeyStateFile.State()
        more.lastUsed["A"] = 1_795_456_800
        try KeyStateFile.merge(more, into: path)
        let back = try KeyStateFile.load(path)
        XCTAssertEqual(back.lastUsed, ["a\"b\n": 1_767_225_600, "A": 1_795_456_800])
        XCTAssertEqual(back.quota["q\\"], KeyStateFile.QuotaUse(period: "p\"", used: 1))
        // A gate a moment behind at midnight does not write the old day over the new one.
        var newDay = KeyStateFile.State(), oldDay = KeyStateFile.State()
        newDay.quota["A"] = KeyStateFile.QuotaUse(period: "2026-12-01", used: 2)
        oldDay.quota["A"] = KeyStateFile.QuotaUse(period: "2026-11-30", used: 90)
        XCTAssertEqual(KeyStateFile.combine(oldDay, with: newDay).quota["A"], newDay.quota["A"])
        XCTAssertEqual(KeyStateFile.combine(newDay, with: oldDay).quota["A"], newDay.quota["A"])
    }

    func testARollupsFileWithHugeCountsCannotTrapTheNextMerge() throws {
        let dir = NSTemporaryDirectory() + "kg-rollups-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/keys.rollups.json"
        let now = Timestamp.nowMillis()
        let hour = now / 3_600_000, day = now / 86_400_000
        let huge = #"{"requests": 9.1e18, "denied": 9.1e18, "reasons": {"revoked": 9.1e18}, "statuses": {"2xx": 9.1e18}, "routes": {"GET /": 9.1e18}, "countries": {"-": 9.1e18}}"#
        let text = #"{"version": 1, "hourly": {"AAAAAAAA": {"\#(hour)": \#(huge), "\#(hour - 1)": \#(huge)}}, "daily": {"AAAAAAAA": {"\#(day)": \#(huge)}}}"#
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        let rollups = UsageRollups(path: path)
        var batch = RollupBatch()
        var e = UsageEvent()
        e.tsMillis = now
        e.key = KeyEntry(record: Fixtures.record("kg_x"), scopes: [:])
        e.status = 401
        e.reason = .revoked
        e.method = ArraySlice("GET".utf8)
        e.path = ArraySlice("/".utf8)
        for _ in 0..<3 { _ = batch.add(e) }
        rollups.merge(batch.take())
        // Held at the most a count can be, and still counting what comes.
        let cell = rollups.series("AAAAAAAA", hourly: true, count: 1, nowMillis: now)[0].cell
        XCTAssertEqual(cell.requests, Bounds.quotaCount + 3)
        XCTAssertEqual(cell.reasons["revoked"], Bounds.quotaCount + 3)
        XCTAssertEqual(rollups.last24Hours(nowMillis: now)["AAAAAAAA"]?.last, Bounds.quotaCount + 3)
        // The console's usage view adds up a window's cells.
        var total = RollupCell()
        for (_, cell) in rollups.series("AAAAAAAA", hourly: true, count: 48, nowMillis: now) { total.add(cell) }
        XCTAssertEqual(total.requests, 2 * Bounds.quotaCount + 3)
        XCTAssertEqual(total.routes["GET /"], 2 * Bounds.quotaCount + 3)
    }

    func testRollupsReadFromBytesKeepOnlyCellsAndWriteBackTheSame() throws {
        let text = #"{"version": 1, "hourly": {"A": {"10": {"requests": 2, "denied": 1, "routes": {"GET /": 2, "GET /x": -4}}, "11": {"requests": -1, "denied": 0}, "h": {"requests": 1, "denied": 0}, "12": {"requests": "1", "denied": 0}}, "B": []}, "daily": {"A": {"0": {"requests": 2, "denied": 1}}}}"#
        let rollups = UsageRollups(parsing: Array(text.utf8))
        XCTAssertEqual(rollups.keyIDs, ["A"])
        let cells = rollups.series("A", hourly: true, count: 3, nowMillis: 12 * 3_600_000)
        XCTAssertEqual(cells.map(\.cell.requests), [2, 0, 0])
        XCTAssertEqual(cells[0].cell.routes, ["GET /": 2])
        let rendered = try XCTUnwrap(rollups.render())
        XCTAssertEqual(UsageRollups(parsing: rendered).render(), rendered)
        XCTAssertTrue(UsageRollups(parsing: Array("not json".utf8)).keyIDs.isEmpty)
    }
}
