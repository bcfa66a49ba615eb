import KeygateCore
import XCTest

/// The error text is part of the contract: exact messages with file and line.
final class PolicyLoaderTests: XCTestCase {
    func problems(_ yaml: String) -> [String] {
        do {
            _ = try Fixtures.policy(yaml)
            return []
        } catch {
            return (error as? PolicyError)?.problems ?? ["\(error)"]
        }
    }

    func testDefaults() throws {
        let p = try Fixtures.policy()
        XCTAssertEqual(p.listen.port, 8080)
        XCTAssertEqual(p.credentialHeaders, ["x-api-key"])
        XCTAssertEqual(p.limits.maxHeaderBytes, 32768)
        XCTAssertEqual(p.timeouts.upstreamResponse, 30_000)
        XCTAssertEqual(p.keysFile, "/tmp/keygate-tests/keys.jsonl")
    }

    func testEveryProblemWithItsLine() {
        let yaml = """
            listen: "0.0.0.0:8080"
            upstreem: "http://127.0.0.1:9000"
            access:
              allow_ips: ["10.0.0.0/8", "10.0.0.300/8"]
            timeouts: { header_read: 10 parsecs }
            scopes:
              a: ["GET /x/**/y"]
            """
        XCTAssertEqual(
            problems(yaml),
            [
                "keygate.yaml:2: unknown field \"upstreem\"",
                "keygate.yaml:4: access.allow_ips[1]: \"10.0.0.300/8\" is not a CIDR",
                "keygate.yaml:5: timeouts.header_read: \"10 parsecs\" is not a duration of at most 7d (like 500ms, 10s, 2m, 1h)",
                "keygate.yaml:7: scopes.a[0]: route \"GET /x/**/y\": ** is allowed only as the last segment",
            ])
    }

    func testCountriesNeedKnownCodesAndADatabase() {
        XCTAssertEqual(
            problems("access:\n  countries: { deny: [KP, XX] }\n"),
            [
                "keygate.yaml:2: access.countries.deny[1]: \"XX\" is not an ISO 3166-1 alpha-2 country code",
                "keygate.yaml:2: access.countries needs geoip_db",
            ])
    }

    func testYAMLSyntaxError() {
        let p = problems("listen: [\n")
        XCTAssertEqual(p.count, 1)
        XCTAssertTrue(p[0].hasPrefix("keygate.yaml:"), p[0])
    }

    func testBadUpstream() {
        XCTAssertEqual(problems("upstream: \"https://x\"\n"), ["keygate.yaml:1: upstream: \"https://x\" must be http://host:port or https://host:port"])
        XCTAssertEqual(problems("upstream: \"ftp://1.2.3.4:21\"\n"), ["keygate.yaml:1: upstream: \"ftp://1.2.3.4:21\" must be http://host:port or https://host:port"])
        XCTAssertEqual(problems("upstream: \"http://127.0.0.1:9000\"\nupstream_tls: { verify: false }\n"), ["keygate.yaml:2: upstream_tls needs an https:// upstream"])
    }

    func testCluster() throws {
        let p = try Fixtures.policy("cluster: { redis: \"redis://:s3cret@10.0.0.5:6380/2\", sync_interval: 250ms, on_redis_down: deny }")
        XCTAssertEqual(p.cluster?.redis.host, "10.0.0.5")
        XCTAssertEqual(p.cluster?.redis.port, 6380)
        XCTAssertEqual(p.cluster?.redis.db, 2)
        XCTAssertEqual(p.cluster?.redis.password, "s3cret")
        XCTAssertEqual(p.cluster?.redis.description, "redis://:***@10.0.0.5:6380/2")
        XCTAssertEqual(p.cluster?.syncIntervalMillis, 250)
        XCTAssertEqual(p.cluster?.denyWhenDown, true)
        XCTAssertEqual(try Fixtures.policy("cluster: { redis: \"redis://[::1]\" }").cluster?.redis.port, 6379)
        XCTAssertEqual(
            problems("cluster:\n  redis: \"http://x\"\n  on_redis_down: maybe\n  sync_interval: 1ms"),
            [
                "keygate.yaml:2: cluster.redis: \"http://x\" is not redis://[password@]host[:port][/db]",
                "keygate.yaml:3: cluster.on_redis_down must be local or deny",
                "keygate.yaml:4: cluster.sync_interval must be from 10ms to 10s",
            ])
        XCTAssertEqual(problems("cluster:\n  on_redis_down: deny"), ["keygate.yaml:2: cluster needs redis (redis://host:port/db)"])
    }
}
