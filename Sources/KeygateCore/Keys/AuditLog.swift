import FoundationEssentials
import Glibc

/// One change to the key store: who, what, which key, and each changed field (old → new).
public struct AuditEntry: Codable {
    public struct Change: Codable, Equatable {
        public var old: JSONValue?
        public var new: JSONValue?
    }

    public var ts: String
    public var actor: String
    public var action: String
    public var key_id: String
    public var changes: [String: Change]

    init(actor: String, action: String, keyID: String, changes: [String: Change]) {
        ts = Timestamp.format(millis: Timestamp.nowMillis())
        self.actor = actor
        self.action = action
        key_id = keyID
        self.changes = changes
    }

    /// Field-by-field difference of two records; `hash` is never written out.
    static func diff(_ a: KeyRecord?, _ b: KeyRecord?) -> [String: Change] {
        let old = a.map(JSONValue.fields) ?? [:]
        let new = b.map(JSONValue.fields) ?? [:]
        var out: [String: Change] = [:]
        for k in Set(old.keys).union(new.keys) where k != "hash" && k != "updated_at" {
            if old[k] != new[k] { out[k] = Change(old: old[k], new: new[k]) }
        }
        return out
    }
}

extension JSONValue {
    static func fields(_ r: KeyRecord) -> [String: JSONValue] {
        JSONValue.of(r)?.object ?? [:]
    }
}

extension KeyRecord {
    /// The record as a JSON object with every optional field present (null when unset), for
    /// the CLI's --json and the console's answers.
    public func jsonObject() -> [String: JSONValue] {
        // A record always encodes; should that ever fail, the fields are missing, not the process.
        var o = JSONValue.fields(self)
        for k in ["description", "owner", "not_before", "expires_at", "rate", "burst", "quota", "revoked_at", "revoke_reason", "rotated_from", "rotated_to"] where o[k] == nil {
            o[k] = .null
        }
        return o
    }
}

public enum AuditLog {
    /// Appends and syncs `entries`; throws when they are not all on disk, so the change they
    /// describe can be refused rather than go unrecorded.
    static func append(_ entries: [AuditEntry], to path: String) throws(KeyStoreError) {
        guard !entries.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data: [UInt8] = []
        for e in entries {
            guard let line = try? encoder.encode(e) else { throw KeyStoreError(path: path, line: nil, message: "cannot encode an audit entry") }
            data.append(contentsOf: line)
            data.append(0x0A)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KeyStoreError(path: path, line: nil, message: "cannot write the audit log: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let folder = PathText.directory(of: path)
        KeyStoreFile.keepOwner(of: folder.isEmpty ? "." : folder, folder: ".", on: fd)
        let failure = KeyStoreFile.writeAndSync(fd, data)
        if failure != 0 { throw KeyStoreError(path: path, line: nil, message: "cannot write the audit log: \(String(cString: strerror(failure)))") }
    }

    public static func read(_ path: String) -> [AuditEntry] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let decoder = JSONDecoder()
        return data.split(separator: 0x0A).compactMap { try? decoder.decode(AuditEntry.self, from: Data($0)) }
    }
}
