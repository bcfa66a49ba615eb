import Foundation
import KeygateCore
import KeygateHTTP

/// Builders shared by the core tests: a policy from YAML text, records for keys, parsed heads.
enum Fixtures {
    static func policy(_ yaml: String = "upstream: \"http://127.0.0.1:9000\"\n") throws -> Policy {
        try PolicyLoader.parse(yaml, file: "/tmp/keygate-tests/keygate.yaml", displayName: "keygate.yaml")
    }

    static func record(_ key: String, id: String = "AAAAAAAA", configure: (inout KeyRecord) -> Void = { _ in }) -> KeyRecord {
        var r = KeyRecord(id: id, name: "Test key", hash: KeyDigest(hashing: key).stored, createdAt: "2026-01-01T00:00:00Z")
        r.owner = "alice"
        configure(&r)
        return r
    }

    static func head(_ text: String) -> RequestHead {
        let bytes = Array(text.utf8)
        var scanner = HeadScanner()
        let end = try! bytes.withUnsafeBytes { try scanner.scan($0) }!
        return try! bytes.withUnsafeBytes { try RequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[0..<end])) }
    }

    static func get(_ path: String, _ headers: [String: String] = [:], method: String = "GET") -> RequestHead {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: gate\r\n"
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) { text += "\(k): \(v)\r\n" }
        return head(text + "\r\n")
    }
}
