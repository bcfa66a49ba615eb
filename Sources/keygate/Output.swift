import FoundationEssentials
import Glibc
import KeygateCore

/// Formatting for people (tables) and for scripts (stable JSON).
enum Output {
    static func printTable(_ rows: [[String]]) {
        let rows = rows.map { $0.map(visible) }
        guard let first = rows.first else { return }
        var widths = first.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        for r in rows {
            let line = r.enumerated().map { i, c in i == r.count - 1 ? c : c.padded(to: widths[i]) }.joined(separator: "  ")
            print(line)
        }
    }

    /// Text for a terminal: control characters (from a store edited by hand, or an older
    /// version that let them in) are shown as `?`, so none acts on the terminal.
    static func visible(_ s: String) -> String {
        guard s.hasControlOrLineBreak else { return s }
        return String(String.UnicodeScalarView(s.unicodeScalars.map { $0.isControlOrLineBreak ? "?" : $0 }))
    }

    static func clip(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }
    static func day(_ ts: String) -> String { String(ts.prefix(10)) }
    static func minute(_ ts: String) -> String { String(ts.prefix(16)).replacing("T", with: " ") }

    static func short(_ v: JSONValue?) -> String { JSONValue.short(v) }

    static func recordJSON(_ r: KeyRecord, state: String, extra: [String: Any]) -> [String: Any] {
        var o: [String: Any] = r.jsonObject()
        o["state"] = state
        for (k, v) in extra { o[k] = v }
        return o
    }

    /// Prints JSON (optionals print as their value or null); a value JSON cannot hold (a NaN) is
    /// a one-line error, exit 1.
    static func printJSON(_ v: Any) {
        guard let bytes = JSONValue.from(v)?.encoded() else {
            StandardStreams.writeError("keygate: cannot print this as JSON\n")
            exit(1)
        }
        print(String(decoding: bytes, as: UTF8.self))
    }

    /// `x` with two decimals, as a table shows milliseconds.
    static func twoDecimals(_ x: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = withVaList([x]) { vsnprintf(&buffer, buffer.count, "%.2f", $0) }
        return String(decoding: buffer.prefix(max(0, min(Int(n), buffer.count - 1))).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension String {
    /// The text padded with spaces to `width` characters (never cut).
    func padded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
