import KeygateCore
import KeygateHTTP
import XCTest

/// What reaches the upstream is exactly what the rules judged: no credential, no path an
/// upstream could decode into another route.
final class EdgeTrustTests: XCTestCase {
    let key = KeyFormat.generate(prefix: "kg", id: "CCCCCCCC").key
    let peer = IPAddress("203.0.113.7")!

    func snapshot(_ yaml: String, scopes: [String] = []) throws -> Snapshot {
        Snapshot(policy: try Fixtures.policy(yaml), records: [Fixtures.record(key, id: "CCCCCCCC") { $0.scopes = scopes }], geoip: nil)
    }

    func forward(_ head: RequestHead, _ s: Snapshot) -> (Decision, String) {
        let d = Gate.decide(head, peer: peer, snapshot: s, nowMillis: Timestamp.nowMillis())
        var out: [UInt8] = []
        UpstreamHead.append(head, decision: d, snapshot: s, requestID: Array("r".utf8), peer: peer, to: &out)
        return (d, String(decoding: out, as: UTF8.self))
    }

    func testPublicRouteRemovesEveryCredential() throws {
        let s = try snapshot("public_routes: [\"GET /status\"]\ncredentials: {headers: [x-api-key, x-other-key], bearer: true}\n")
        let head = Fixtures.head(
            "GET /status HTTP/1.1\r\nHost: g\r\nx-api-key: kg_wrong_secret\r\nX-Other-Key: another\r\nAuthorization: Bearer tok\r\n"
                + "X-Keygate-Key-Id: forged\r\n\r\n")
        let (d, out) = forward(head, s)
        XCTAssertNil(d.denial)
        XCTAssertTrue(d.isPublic)
        XCTAssertFalse(out.lowercased().contains("x-api-key"), out)
        XCTAssertFalse(out.lowercased().contains("x-other-key"), out)
        XCTAssertFalse(out.lowercased().contains("authorization"), out)
        XCTAssertFalse(out.contains("forged"), out)
        XCTAssertFalse(out.contains("X-Keygate-Key-Id"), out)
    }

    func testPublicRouteWithAValidKeyAddsItsIdentityOnly() throws {
        let s = try snapshot("public_routes: [\"GET /status\"]\n")
        let (d, out) = forward(Fixtures.get("/status", ["Authorization": "Bearer \(key)"]), s)
        XCTAssertNil(d.denial)
        XCTAssertEqual(d.key?.record.id, "CCCCCCCC")
        XCTAssertTrue(out.contains("X-Keygate-Key-Id: CCCCCCCC\r\n"), out)
        XCTAssertFalse(out.contains(key), out)
    }

    func testABearerTokenAfterATabIsACredentialToo() throws {
        let s = try snapshot("public_routes: [\"GET /status\"]\n")
        var (d, out) = forward(Fixtures.head("GET /status HTTP/1.1\r\nHost: g\r\nAuthorization: bEaReR\t\t\(key)\r\n\r\n"), s)
        XCTAssertEqual(d.key?.record.id, "CCCCCCCC")
        XCTAssertFalse(out.contains(key), out)
        (d, out) = forward(Fixtures.head("GET /status HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer\tkg_wrong_secret\r\n\r\n"), s)
        XCTAssertNil(d.key)
        XCTAssertFalse(out.contains("kg_wrong_secret"), out)
        // Not a bearer scheme: the app's own.
        (d, out) = forward(Fixtures.head("GET /status HTTP/1.1\r\nHost: g\r\nAuthorization: Bearertoken\r\n\r\n"), s)
        XCTAssertTrue(out.contains("Authorization: Bearertoken\r\n"), out)
    }

    func testAKeyFieldWithUnderscoresIsTheKeyField() throws {
        // CGI-style apps read both as HTTP_X_API_KEY.
        let s = try snapshot("public_routes: [\"GET /status\"]\ncredentials: {headers: [x-api-key, X_Other_Key]}\n")
        var (d, out) = forward(Fixtures.get("/x", ["X_API_KEY": key]), s)
        XCTAssertEqual(d.key?.record.id, "CCCCCCCC")
        XCTAssertFalse(out.contains(key), out)
        (d, _) = forward(Fixtures.get("/x", ["x-api-key": key, "x_api_key": "kg_other_secret"]), s)
        XCTAssertEqual(d.denial, .malformed_key)
        (d, out) = forward(Fixtures.get("/status", ["x-other-key": "kg_other_secret"]), s)
        XCTAssertNil(d.denial)
        XCTAssertFalse(out.contains("kg_other_secret"), out)
        XCTAssertEqual(UpstreamHead.refusal(Fixtures.get("/x", ["x-api-key": key, "Connection": "x_other_key"]), snapshot: s), "Connection names the credential field")
    }

    func testBasicAuthorizationIsNotACredential() throws {
        let s = try snapshot("public_routes: [\"GET /status\"]\n")
        let (_, out) = forward(Fixtures.get("/status", ["Authorization": "Basic dTpw"]), s)
        XCTAssertTrue(out.contains("Authorization: Basic dTpw\r\n"), out)
    }

    func testAQueryKeyParameterIsKnownByItsDecodedName() throws {
        let s = try snapshot("credentials: {headers: [x-api-key], query: [api_key]}\n")
        // Escaped, the name is still the credential: it authenticates and is removed.
        var (d, out) = forward(Fixtures.get("/ws?room=7&api%5Fkey=\(key)&x=%41"), s)
        XCTAssertNil(d.denial)
        XCTAssertEqual(d.key?.record.id, "CCCCCCCC")
        XCTAssertTrue(out.hasPrefix("GET /ws?room=7&x=%41 HTTP/1.1\r\n"), out)
        XCTAssertFalse(out.contains(key), out)
        // A second key under an escaped name is two credentials, not one checked and one passed on.
        (d, out) = forward(Fixtures.get("/ws?api_key=\(key)&%61pi_key=kg_other_secret"), s)
        XCTAssertEqual(d.denial, .malformed_key)
        (d, out) = forward(Fixtures.get("/ws?x=1&api%5fkey=kg_other_secret", ["x-api-key": key]), s)
        XCTAssertEqual(d.denial, .malformed_key)
        // Names that only look alike stay parameters of the app.
        (d, out) = forward(Fixtures.get("/ws?api_key2=a&api%5Fke=b&api_ke%79x=c&api_key=\(key)"), s)
        XCTAssertNil(d.denial)
        XCTAssertTrue(out.hasPrefix("GET /ws?api_key2=a&api%5Fke=b&api_ke%79x=c HTTP/1.1\r\n"), out)
    }

    func testEscapedSlashesAreRefusedByDefault() throws {
        let s = try snapshot("workers: 1\n")
        for path in ["/suppliers/..%2Fadmin", "/a%2fb", "/a%5Cb", "/a%5cb"] {
            XCTAssertNotNil(UpstreamHead.refusal(Fixtures.get(path, ["x-api-key": key]), snapshot: s), path)
        }
        // The query is not the path.
        XCTAssertNil(UpstreamHead.refusal(Fixtures.get("/a?next=%2Fb", ["x-api-key": key]), snapshot: s))
    }

    func testUnescapeAndForwardMatchesAndForwardsTheDecodedPath() throws {
        let yaml = "paths: {escaped_slashes: unescape_and_forward}\nscopes:\n  s: [\"GET /suppliers/*\"]\n"
        let s = try snapshot(yaml, scopes: ["s"])
        XCTAssertNil(UpstreamHead.refusal(Fixtures.get("/suppliers/..%2Fadmin", ["x-api-key": key]), snapshot: s))
        let (d, _) = forward(Fixtures.get("/suppliers/..%2Fadmin", ["x-api-key": key]), s)
        XCTAssertEqual(d.denial, .scope_denied)
        let (ok, out) = forward(Fixtures.get("/suppliers%2F7?q=%2F", ["x-api-key": key]), s)
        XCTAssertNil(ok.denial)
        XCTAssertTrue(out.hasPrefix("GET /suppliers/7?q=%2F HTTP/1.1\r\n"), out)
    }

    func testKeepForwardsTheEscapeAsOneSegment() throws {
        let s = try snapshot("paths: {escaped_slashes: keep}\nscopes:\n  s: [\"GET /suppliers/*\"]\n", scopes: ["s"])
        let (d, out) = forward(Fixtures.get("/suppliers/..%2fadmin", ["x-api-key": key]), s)
        XCTAssertNil(d.denial)
        XCTAssertTrue(out.hasPrefix("GET /suppliers/..%2Fadmin HTTP/1.1\r\n"), out)
    }

    func testForwardedPathIsTheNormalFormThatWasMatched() throws {
        let s = try snapshot("scopes:\n  s: [\"GET /suppliers/*\"]\n", scopes: ["s"])
        let (d, out) = forward(Fixtures.get("/admin/../suppliers/%37?x=/../y", ["x-api-key": key]), s)
        XCTAssertNil(d.denial)
        XCTAssertTrue(out.hasPrefix("GET /suppliers/7?x=/../y HTTP/1.1\r\n"), out)
        // Reserved characters stay encoded: %3F is never turned into a query.
        let (_, encoded) = forward(Fixtures.get("/suppliers/a%3fb", ["x-api-key": key]), s)
        XCTAssertTrue(encoded.hasPrefix("GET /suppliers/a%3Fb HTTP/1.1\r\n"), encoded)
        // A canonical path goes through untouched.
        let (plain, same) = forward(Fixtures.get("/suppliers/7", ["x-api-key": key]), s)
        XCTAssertNil(plain.forwardPath)
        XCTAssertTrue(same.hasPrefix("GET /suppliers/7 HTTP/1.1\r\n"), same)
    }

    func testCanonicalCheckAgreesWithTheNormalizer() {
        for path in ["/", "/a", "/a/b/", "/a/./b", "/a/../b", "/.", "/..", "/a/..", "/...", "/a.b", "/.a", "/a%41", "//x", "/a/.../b"] {
            let bytes = Array(path.utf8)
            bytes.withUnsafeBufferPointer { p in
                let normal = PathNormalizer.normalize(p, 0..<bytes.count)
                if PathNormalizer.isCanonical(p, 0..<bytes.count) {
                    XCTAssertEqual(normal, bytes, path)
                }
            }
        }
    }

    func testPolicyRejectsAnUnknownEscapedSlashesMode() {
        XCTAssertThrowsError(try Fixtures.policy("paths: {escaped_slashes: decode}\n"))
    }
}

final class ClientCertificateTests: XCTestCase {
    func testABoundCertificateAuthenticatesWithoutAHeader() throws {
        let key = KeyFormat.generate(prefix: "kg", id: "EEEEEEEE").key
        let fingerprint = KeyDigest(hashing: "a client certificate")
        let other = KeyDigest(hashing: "another certificate")
        let s = Snapshot(policy: try Fixtures.policy(), records: [Fixtures.record(key, id: "EEEEEEEE") { $0.client_certs = [fingerprint.stored] }], geoip: nil)
        let now = Timestamp.nowMillis()
        let peer = IPAddress("192.0.2.9")!
        let d = Gate.decide(Fixtures.get("/x"), peer: peer, snapshot: s, nowMillis: now, clientCertificate: fingerprint)
        XCTAssertNil(d.denial)
        XCTAssertEqual(d.key?.record.id, "EEEEEEEE")
        XCTAssertEqual(Gate.decide(Fixtures.get("/x"), peer: peer, snapshot: s, nowMillis: now, clientCertificate: other).denial, .missing_key)
        XCTAssertEqual(Gate.decide(Fixtures.get("/x"), peer: peer, snapshot: s, nowMillis: now).denial, .missing_key)
        // A header credential is what counts when both are there.
        XCTAssertEqual(
            Gate.decide(Fixtures.get("/x", ["x-api-key": "kg_wrong"]), peer: peer, snapshot: s, nowMillis: now, clientCertificate: fingerprint).denial,
            .malformed_key)
    }

    func testFingerprintsRoundTripInTheStore() throws {
        var r = KeyRecord(id: "AAAAAAAA", name: "n", hash: KeyDigest(hashing: "k").stored, createdAt: "2026-01-01T00:00:00Z")
        r.client_certs = [KeyDigest(hashing: "c").stored]
        var line: [UInt8] = []
        KeyRecordCodec.encode(r, to: &line)
        let back = try line.withUnsafeBufferPointer { try KeyRecordCodec.decode(UnsafeBufferPointer(rebasing: $0[0..<($0.count - 1)])) }
        XCTAssertEqual(back, r)
        let bad = Array(String(decoding: line, as: UTF8.self).replacingOccurrences(of: "sha256:", with: "md5:").utf8.dropLast())
        XCTAssertThrowsError(try bad.withUnsafeBufferPointer { try KeyRecordCodec.decode($0) })
    }
}
