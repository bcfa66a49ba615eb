import KeygateCore
import KeygateHTTP
import XCTest

final class SupportTests: XCTestCase {
    func testTimestamps() {
        XCTAssertEqual(Timestamp.parseMillis("1970-01-01T00:00:00Z"), 0)
        XCTAssertEqual(Timestamp.parseMillis("2026-11-23T18:00:00.123Z"), 1_795_456_800_123)
        XCTAssertEqual(Timestamp.parseMillis("2026-11-23T19:00:00+01:00"), 1_795_456_800_000)
        XCTAssertEqual(Timestamp.format(millis: 1_795_456_800_123), "2026-11-23T18:00:00.123Z")
        XCTAssertEqual(Timestamp.format(seconds: 951_782_400), "2000-02-29T00:00:00Z")
        // Seconds read from elsewhere (a shared Redis) are held to the years RFC 3339 can write.
        XCTAssertEqual(Timestamp.format(seconds: .max), "9999-12-31T23:59:59Z")
        XCTAssertEqual(Timestamp.format(seconds: .min), "1970-01-01T00:00:00Z")
        XCTAssertNil(Timestamp.parseMillis("2026-02-30T00:00:00Z"))
        XCTAssertNil(Timestamp.parseMillis("yesterday"))
        // RFC 3339's offsets stop at 23:59.
        XCTAssertNil(Timestamp.parseMillis("2026-12-01T10:00:00+25:00"))
        XCTAssertNil(Timestamp.parseMillis("2026-12-01T10:00:00-01:60"))
        XCTAssertEqual(Timestamp.parseMillis("2026-11-23T18:00:00-23:59"), 1_795_456_800_000 + 86_340_000)
    }

    func testDurations() {
        XCTAssertEqual(DurationText.parseMillis("500ms"), 500)
        XCTAssertEqual(DurationText.parseMillis("90d"), 90 * 86_400_000)
        XCTAssertNil(DurationText.parseMillis("10"))
        XCTAssertNil(DurationText.parseMillis("-1s"))
    }

    func testCIDRSet() {
        let set = CIDRSet(["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "192.168.1.128/25"].map { CIDR($0)! })
        XCTAssertTrue(set.contains(IPAddress("10.255.0.1")!))
        XCTAssertTrue(set.contains(IPAddress("192.168.1.200")!))
        XCTAssertFalse(set.contains(IPAddress("192.168.2.1")!))
        XCTAssertTrue(set.contains(IPAddress("2001:db8::1")!))
        XCTAssertFalse(set.contains(IPAddress("2001:db9::1")!))
        // IPv4-mapped IPv6 is the same address.
        XCTAssertTrue(set.contains(IPAddress("::ffff:10.1.1.1")!))
        XCTAssertNil(CIDR("10.0.0.0/33"))
        XCTAssertNil(CIDR("010.0.0.1"))
        XCTAssertNil(IPAddress("1.2.3"))
    }

    func testUsageEventLine() {
        var e = UsageEvent()
        e.tsMillis = 1_795_456_800_123
        e.requestID = Array("r1".utf8)
        e.allowed = false
        e.reason = .unknown_key
        e.status = 401
        e.client = IPAddress("81.2.69.142")
        e.country = CountryCode.pack("GB")
        e.method = ArraySlice("GET".utf8)
        e.path = ArraySlice("/a\"b".utf8)
        e.durationMicros = 1234
        var out: [UInt8] = []
        e.append(to: &out)
        XCTAssertEqual(
            String(decoding: out, as: UTF8.self),
            #"{"ts":"2026-11-23T18:00:00.123Z","request_id":"r1","decision":"deny","reason":"unknown_key","status":401,"key_id":null,"key_name":null,"owner":null,"client_ip":"81.2.69.142","country":"GB","method":"GET","path":"/a\"b","bytes_in":0,"bytes_out":0,"duration_ms":1.23,"upstream_ms":null}"#
                + "\n")
    }

    func testUsageLineIsTheSameInABatchBuffer() {
        var e = UsageEvent()
        e.tsMillis = 1_795_456_800_123
        e.requestID = Array("r2".utf8)
        e.allowed = true
        e.status = 200
        e.client = IPAddress("2001:db8::7")
        e.method = ArraySlice("POST".utf8)
        e.path = ArraySlice("/x\u{1}".utf8)
        e.upstreamMicros = 999
        e.tls = 13
        var array: [UInt8] = []
        var clock = Timestamp.SecondCache()
        e.append(to: &array, clock: &clock)
        let buffer = ByteBuffer(capacity: 8)
        e.append(to: buffer, clock: &clock)
        XCTAssertEqual(Array(buffer.bytes), array)
        XCTAssertTrue(String(decoding: array, as: UTF8.self).contains(#""client_ip":"2001:db8::7""#))
        XCTAssertTrue(String(decoding: array, as: UTF8.self).contains(#""path":"/x\u0001""#))
    }

    func testIPv4Text() {
        for text in ["0.0.0.0", "255.255.255.255", "10.0.0.1", "192.168.100.9", "8.80.108.200"] {
            var out: [UInt8] = []
            IPAddress(text)!.append(to: &out)
            XCTAssertEqual(String(decoding: out, as: UTF8.self), text)
        }
    }

    func testSecondCacheFormatsLikeTimestamp() {
        var cache = Timestamp.SecondCache()
        for ms: Int64 in [0, 999, 1000, 1_764_504_000_123, 1_764_504_000_999, 1_764_504_001_000, 1_764_504_001_007, 253_402_300_799_999, -1, -1001] {
            var out: [UInt8] = []
            cache.append(millis: ms, to: &out)
            XCTAssertEqual(String(decoding: out, as: UTF8.self), Timestamp.format(millis: ms), "\(ms)")
        }
    }
}

final class ErrorResponseTests: XCTestCase {
    func testTemplatesWriteWhatTheGeneralPathWrites() {
        XCTAssertEqual(DenyReason.allCases.map(\.index), Array(0..<DenyReason.allCases.count))
        for reason in DenyReason.allCases where reason.status != 429 {
            for close in [false, true] {
                for headOnly in [false, true] {
                    let id = Array("abc-1-2f".utf8)
                    var fast: [UInt8] = []
                    let fastSize = ErrorResponse.appendDenial(reason, requestID: id, close: close, headOnly: headOnly, to: &fast)
                    var extra = ""
                    if reason.status == 401 {
                        extra = reason == .missing_key ? "WWW-Authenticate: Bearer realm=\"keygate\"\r\n" : "WWW-Authenticate: Bearer realm=\"keygate\", error=\"invalid_token\"\r\n"
                    }
                    var slow: [UInt8] = []
                    let slowSize = ErrorResponse.append(
                        status: reason.status, error: reason.rawValue, message: reason.message, requestID: id, close: close, extraHeaders: extra,
                        headOnly: headOnly, to: &slow)
                    XCTAssertEqual(String(decoding: fast, as: UTF8.self), String(decoding: slow, as: UTF8.self), "\(reason)")
                    XCTAssertEqual(fastSize, slowSize)
                }
            }
        }
    }
}
