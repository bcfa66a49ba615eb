/// Durations as ops write them: `500ms`, `10s`, `5m`, `12h`, `90d`, `2w`.
public enum DurationText {
    /// Milliseconds, or nil when `text` is not a positive duration.
    public static func parseMillis(_ text: String) -> Int64? {
        let s = Array(text.utf8)
        var i = 0
        var value: Int64 = 0
        while i < s.count, s[i] >= 0x30 && s[i] <= 0x39 {
            value = value * 10 + Int64(s[i] - 0x30)
            if value > 1_000_000_000 { return nil }
            i += 1
        }
        guard i > 0 else { return nil }
        let unit = String(decoding: s[i...], as: UTF8.self)
        let scale: Int64
        switch unit {
        case "ms": scale = 1
        case "s": scale = 1000
        case "m": scale = 60_000
        case "h": scale = 3_600_000
        case "d": scale = 86_400_000
        case "w": scale = 7 * 86_400_000
        default: return nil
        }
        let ms = value * scale
        return ms <= Bounds.durationMillis ? ms : nil
    }
}
