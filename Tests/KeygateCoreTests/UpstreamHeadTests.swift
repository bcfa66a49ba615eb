import KeygateCore
import KeygateHTTP
import XCTest

final class UpstreamHeadTests: XCTestCase {
    let key = KeyFormat.generate(prefix: "kg", id: "BBBBBBBB").key

    func forward(_ head: RequestHead, trusted: Bool = false, peer: String = "203.0.113.7") throws -> String {
        let policy = try Fixtures.policy(trusted ? "trusted_proxies: [\"203.0.113.0/24\"]\n" : "upstream: \"http://127.0.0.1:9000\"\n")
        let s = Snapshot(policy: policy, records: [Fixtures.record(key, id: "BBBBBBBB") { $0.scopes = [] }], geoip: nil)
        let d = Gate.decide(head, peer: IPAddress(peer)!, snapshot: s, nowMillis: Timestamp.nowMillis())
        XCTAssertNil(d.denial)
        var out: [UInt8] = []
        UpstreamHead.append(head, decision: d, snapshot: s, requestID: Array("req-1".utf8), peer: IPAddress(peer)!, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    func testCredentialHopByHopAndForgeriesRemoved() throws {
        let head = Fixtures.head(
            "POST /a?b HTTP/1.1\r\nHost: gate\r\nx-api-key: \(key)\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n"
                + "TE: trailers\r\nUpgrade: websocket\r\nProxy-Authorization: p\r\nX-Keygate-Key-Id: forged\r\nx_keygate_owner: forged\r\n"
                + "X-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 1.1.1.1\r\nForwarded: for=1.1.1.1\r\nX-Request-Id: bad id!\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n")
        let out = try forward(head)
        XCTAssertEqual(
            out,
            "POST /a?b HTTP/1.1\r\nHost: gate\r\nAccept: */*\r\nContent-Length: 3\r\nX-Keygate-Key-Id: BBBBBBBB\r\nX-Keygate-Key-Name: Test key\r\n"
                + "X-Keygate-Owner: alice\r\nX-Keygate-Scopes: \r\nX-Request-Id: req-1\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    func testTrustedProxyChainIsKept() throws {
        let head = Fixtures.get("/", ["x-api-key": key, "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"])
        let out = try forward(head, trusted: true)
        XCTAssertTrue(out.contains("X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n"), out)
        XCTAssertTrue(out.contains("X-Forwarded-Proto: https\r\n"), out)
    }

    func testLookAlikesSpelledWithUnderscoresAreDropped() throws {
        // An app that reads fields as HTTP_X_FORWARDED_FOR cannot tell these from the gate's own.
        let lookAlikes = "X_Forwarded_For: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nx-forwarded_host: evil\r\n"
            + "x_request_id: forged\r\nTransfer_Encoding: chunked\r\nContent_Length: 9\r\nX_Custom: kept\r\n"
        for trusted in [false, true] {
            let out = try forward(Fixtures.head("GET /a HTTP/1.1\r\nHost: gate\r\nx-api-key: \(key)\r\n" + lookAlikes + "\r\n"), trusted: trusted)
            XCTAssertFalse(out.contains("6.6.6.6") || out.contains("evil") || out.contains("forged") || out.contains("_Encoding") || out.contains("_Length"), out)
            XCTAssertFalse(out.contains("https"), out)
            XCTAssertTrue(out.contains("X_Custom: kept\r\n"), out)
            XCTAssertTrue(out.contains("X-Forwarded-For: 203.0.113.7\r\n"), out)
        }
    }

    func testAnHTTP10RequestWithoutHostGetsTheUpstreamsHost() throws {
        let out = try forward(Fixtures.head("GET /a HTTP/1.0\r\nx-api-key: \(key)\r\n\r\n"))
        XCTAssertTrue(out.hasPrefix("GET /a HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"), out)
        let kept = try forward(Fixtures.head("GET /a HTTP/1.0\r\nHost: app.example\r\nx-api-key: \(key)\r\n\r\n"))
        XCTAssertTrue(kept.contains("Host: app.example\r\n") && !kept.contains("127.0.0.1:9000"), kept)
    }

    func testChunkedIsReframedByUs() throws {
        let head = Fixtures.head("POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nx-api-key: \(key)\r\n\r\n")
        let out = try forward(head)
        XCTAssertTrue(out.contains("Transfer-Encoding: chunked\r\n"))
    }

    func testClientRequestIDKeptOnlyWhenSafe() {
        XCTAssertEqual(UpstreamHead.clientRequestID(Fixtures.get("/", ["X-Request-Id": "abc.DEF_12-3"])), Array("abc.DEF_12-3".utf8))
        XCTAssertNil(UpstreamHead.clientRequestID(Fixtures.get("/", ["X-Request-Id": "a b"])))
        XCTAssertNil(UpstreamHead.clientRequestID(Fixtures.get("/", ["X-Request-Id": String(repeating: "a", count: 65)])))
    }

    func testConnectionNamingCredentialIsRefused() throws {
        let s = Snapshot(policy: try Fixtures.policy(), records: [], geoip: nil)
        XCTAssertNotNil(UpstreamHead.refusal(Fixtures.get("/", ["Connection": "x-api-key"]), snapshot: s))
        XCTAssertNotNil(UpstreamHead.refusal(Fixtures.get("/", ["Connection": "X-Keygate-Key-Id"]), snapshot: s))
        XCTAssertNil(UpstreamHead.refusal(Fixtures.get("/", ["Connection": "x-other"]), snapshot: s))
    }
}
