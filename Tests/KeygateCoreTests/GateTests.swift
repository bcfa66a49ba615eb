import KeygateCore
import KeygateHTTP
import XCTest

/// The decision as a pure function: head, peer, snapshot, time → decision.
final class GateTests: XCTestCase {
    let key = KeyFormat.generate(prefix: "kg", id: "AAAAAAAA").key
    let peer = IPAddress("203.0.113.7")!
    let now = Timestamp.parseMillis("2026-06-01T12:00:00Z")!

    func snapshot(policy yaml: String? = nil, _ configure: (inout KeyRecord) -> Void = { _ in }) throws -> Snapshot {
        let policy = try yaml.map { try Fixtures.policy($0) } ?? Fixtures.policy()
        return Snapshot(policy: policy, records: [Fixtures.record(key, configure: configure)], geoip: nil)
    }

    func decide(_ head: RequestHead, _ s: Snapshot, peer: IPAddress? = nil) -> Decision {
        Gate.decide(head, peer: peer ?? self.peer, snapshot: s, nowMillis: now)
    }

    func testAllowedWithHeaderOrBearer() throws {
        let s = try snapshot()
        let d1 = decide(Fixtures.get("/x", ["x-api-key": key]), s)
        XCTAssertNil(d1.denial)
        XCTAssertEqual(d1.key?.record.id, "AAAAAAAA")
        XCTAssertEqual(d1.credentialField, 1)
        let d2 = decide(Fixtures.get("/x", ["Authorization": "Bearer \(key)"]), s)
        XCTAssertNil(d2.denial)
    }

    func testKeyReasons() throws {
        let s = try snapshot()
        XCTAssertEqual(decide(Fixtures.get("/x"), s).denial, .missing_key)
        // A different last check digit (the secret is random: its own may already be "0").
        let wrongDigit = key.hasSuffix("0") ? "1" : "0"
        XCTAssertEqual(decide(Fixtures.get("/x", ["x-api-key": String(key.dropLast()) + wrongDigit]), s).denial, .malformed_key)
        XCTAssertEqual(decide(Fixtures.get("/x", ["x-api-key": KeyFormat.generate(prefix: "kg").key]), s).denial, .unknown_key)
        XCTAssertEqual(decide(Fixtures.get("/x", ["x-api-key": "some-legacy-secret-value"]), s).denial, .unknown_key)
        XCTAssertEqual(decide(Fixtures.get("/x", ["Authorization": "Basic abc"]), s).denial, .missing_key)
        // Two credentials are ambiguous.
        XCTAssertEqual(decide(Fixtures.get("/x", ["x-api-key": key, "Authorization": "Bearer \(key)"]), s).denial, .malformed_key)
    }

    func testKeyStates() throws {
        XCTAssertEqual(decide(Fixtures.get("/", ["x-api-key": key]), try snapshot { $0.status = .revoked }).denial, .revoked)
        XCTAssertEqual(decide(Fixtures.get("/", ["x-api-key": key]), try snapshot { $0.status = .disabled }).denial, .disabled)
        XCTAssertEqual(decide(Fixtures.get("/", ["x-api-key": key]), try snapshot { $0.expires_at = "2026-06-01T11:59:59Z" }).denial, .expired)
        XCTAssertNil(decide(Fixtures.get("/", ["x-api-key": key]), try snapshot { $0.expires_at = "2026-06-01T12:00:01Z" }).denial)
        XCTAssertEqual(decide(Fixtures.get("/", ["x-api-key": key]), try snapshot { $0.not_before = "2026-07-01" }).denial, .not_yet_valid)
    }

    func testGlobalAndKeyAllowlists() throws {
        let s = try snapshot(policy: "access:\n  allow_ips: [\"10.0.0.0/8\", \"203.0.113.0/24\"]\n")
        XCTAssertNil(decide(Fixtures.get("/", ["x-api-key": key]), s).denial)
        XCTAssertEqual(decide(Fixtures.get("/", ["x-api-key": key]), s, peer: IPAddress("192.0.2.1")).denial, .ip_not_allowed)
        let k = try snapshot { $0.allow_ips = ["203.0.113.7/32"] }
        XCTAssertNil(decide(Fixtures.get("/", ["x-api-key": key]), k).denial)
        XCTAssertEqual(decide(Fixtures.get("/", ["x-api-key": key]), k, peer: IPAddress("203.0.113.8")).denial, .ip_not_allowed)
    }

    func testScopesAndPublicRoutes() throws {
        let yaml = """
            public_routes: ["GET /healthz"]
            scopes:
              suppliers.read: ["GET /suppliers", "GET /suppliers/*"]
              admin: ["* /admin/**"]
            """
        let s = try snapshot(policy: yaml) { $0.scopes = ["suppliers.read"] }
        XCTAssertNil(decide(Fixtures.get("/healthz"), s).denial)
        XCTAssertNil(decide(Fixtures.get("/suppliers", ["x-api-key": key]), s).denial)
        XCTAssertNil(decide(Fixtures.get("/suppliers/42?full=1", ["x-api-key": key]), s).denial)
        XCTAssertEqual(decide(Fixtures.get("/suppliers/42/notes", ["x-api-key": key]), s).denial, .scope_denied)
        XCTAssertEqual(decide(Fixtures.get("/suppliers", ["x-api-key": key], method: "POST"), s).denial, .scope_denied)
        // Dot segments and encoded dots cannot slip past a rule.
        XCTAssertEqual(decide(Fixtures.get("/suppliers/../admin", ["x-api-key": key]), s).denial, .scope_denied)
        XCTAssertEqual(decide(Fixtures.get("/suppliers/%2e%2e/admin", ["x-api-key": key]), s).denial, .scope_denied)
        XCTAssertNil(decide(Fixtures.get("/admin/../suppliers/7", ["x-api-key": key]), s).denial)
    }

    func testTrustedProxyChain() throws {
        let s = try snapshot(policy: "trusted_proxies: [\"10.0.0.0/8\"]\naccess:\n  allow_ips: [\"198.51.100.0/24\"]\n")
        let proxy = IPAddress("10.1.2.3")!
        let via = decide(Fixtures.get("/", ["x-api-key": key, "X-Forwarded-For": "1.2.3.4, 198.51.100.9, 10.9.9.9"]), s, peer: proxy)
        XCTAssertEqual(via.client, IPAddress("198.51.100.9"))
        XCTAssertNil(via.denial)
        // From an untrusted peer the header is ignored.
        let direct = decide(Fixtures.get("/", ["x-api-key": key, "X-Forwarded-For": "198.51.100.9"]), s, peer: IPAddress("192.0.2.1")!)
        XCTAssertEqual(direct.client, IPAddress("192.0.2.1"))
        XCTAssertEqual(direct.denial, .ip_not_allowed)
    }
    func testForwardedChainsReadFromBytes() throws {
        let s = try snapshot(policy: "trusted_proxies: [\"10.0.0.0/8\"]\n")
        let proxy = IPAddress("10.1.2.3")!
        func client(_ fields: String) -> IPAddress? {
            decide(Fixtures.head("GET / HTTP/1.1\r\nHost: gate\r\nx-api-key: \(key)\r\n" + fields + "\r\n"), s, peer: proxy).client
        }
        // Two X-Forwarded-For lines are one chain; empty items are skipped.
        XCTAssertEqual(client("X-Forwarded-For: 203.0.113.5,, 10.0.0.9\r\nX-Forwarded-For: \t10.2.2.2 \r\n"), IPAddress("203.0.113.5"))
        // Every hop trusted: the left-most.
        XCTAssertEqual(client("X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n"), IPAddress("10.0.0.1"))
        // One unreadable item makes the whole chain untrusted: the peer.
        for bad in ["203.0.113.5, 010.0.0.1", "256.1.1.1", "1.2.3", "1.2.3.4.", "1..2.3", "1.2.3.4:80", "unknown"] {
            XCTAssertEqual(client("X-Forwarded-For: \(bad)\r\n"), proxy, bad)
        }
        // Forwarded (RFC 7239) when there is no X-Forwarded-For: quoted, bracketed, with ports.
        XCTAssertEqual(client("Forwarded: for=\"[2001:db8::7]:443\";proto=https, FOR=10.0.0.5\r\n"), IPAddress("2001:db8::7"))
        XCTAssertEqual(client("Forwarded: by=10.0.0.1;for=\"198.51.100.4:8080\"\r\n"), IPAddress("198.51.100.4"))
        XCTAssertEqual(client("Forwarded: for=; for=198.51.100.4\r\n"), IPAddress("198.51.100.4"))
        XCTAssertEqual(client("Forwarded: for=_hidden\r\n"), proxy)
        // A value of spaces is unreadable, not absent.
        XCTAssertEqual(client("Forwarded: for= ;for=198.51.100.4\r\n"), proxy)
        XCTAssertEqual(client("Forwarded: for=198.51.100.4\r\nX-Forwarded-For: 203.0.113.9\r\n"), IPAddress("203.0.113.9"))
    }

    func testAddressText() {
        XCTAssertEqual(IPAddress("0.0.0.0")?.description, "0.0.0.0")
        XCTAssertEqual(IPAddress("255.255.255.255")?.description, "255.255.255.255")
        XCTAssertEqual(IPAddress("[::1]")?.description, "::1")
        XCTAssertEqual(IPAddress("::ffff:192.0.2.1"), IPAddress("192.0.2.1"))
        for bad in ["", ".", "1.2.3.4 ", " 1.2.3.4", "1.2.3.-4", "1.2.3.1000", "00.1.2.3", "[1.2.3.4", ":::", "::1\u{0}", String(repeating: "1:", count: 30)] {
            XCTAssertNil(IPAddress(bad), bad)
        }
    }
}
