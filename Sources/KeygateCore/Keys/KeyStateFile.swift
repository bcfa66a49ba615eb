import Foundation

/// `keys.state.json` beside the store: what gates observe about keys (last use), merged by
/// every gate that shares the store, read by the CLI.
///
/// `{"last_used": {"ID": "2026-11-23T18:00:00Z", …}}`. Merging keeps the latest time per key,
/// so several gates writing to one file never move a key's last use backwards.
public enum KeyStateFile {
    public static func path(for policy: Policy) -> String {
        ((policy.keysFile as NSString).deletingLastPathComponent as NSString).appendingPathComponent("keys.state.json")
    }

    /// Last-use times (Unix seconds) by key id.
    public static func read(_ path: String) -> [String: Int64] {
        guard let data = FileManager.default.contents(atPath: path),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let last = object["last_used"] as? [String: String]
        else { return [:] }
        var out: [String: Int64] = [:]
        for (id, ts) in last {
            if let ms = Timestamp.parseMillis(ts) { out[id] = ms / 1000 }
        }
        return out
    }

    /// Merges `seen` into the file under its lock and replaces it atomically.
    public static func merge(_ seen: [String: Int64], into path: String) throws {
        guard !seen.isEmpty else { return }
        let lock = try KeyStoreLock(storePath: path)
        var merged = read(path)
        for (id, t) in seen where t > (merged[id] ?? 0) { merged[id] = t }
        var lines: [String] = []
        for id in merged.keys.sorted() { lines.append("    \"\(id)\": \"\(Timestamp.format(seconds: merged[id]!))\"") }
        let text = "{\n  \"last_used\": {\n" + lines.joined(separator: ",\n") + "\n  }\n}\n"
        try KeyStoreFile.writeAtomically(Array(text.utf8), to: path, mode: 0o600)
        withExtendedLifetime(lock) {}
    }
}
