import Foundation
import KeygateCore

/// Reads the gate's last-used state file (`keys.state.json` beside the store), if any.
enum LastUsedFile {
    static func read(for policy: Policy) -> [String: String] {
        let dir = (policy.keysFile as NSString).deletingLastPathComponent
        let path = (dir as NSString).appendingPathComponent("keys.state.json")
        guard let data = FileManager.default.contents(atPath: path),
            let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let last = o["last_used"] as? [String: String]
        else { return [:] }
        return last
    }
}
