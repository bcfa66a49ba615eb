import Foundation
import KeygateCore

/// Formatting for people (tables) and for scripts (stable JSON).
enum Output {
    static func printTable(_ rows: [[String]]) {
        guard let first = rows.first else { return }
        var widths = first.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        for r in rows {
            let line = r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
            print(line)
        }
    }

    static func clip(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }
    static func day(_ ts: String) -> String { String(ts.prefix(10)) }
    static func minute(_ ts: String) -> String { String(ts.prefix(16)).replacingOccurrences(of: "T", with: " ") }

    static func short(_ v: JSONValue?) -> String { JSONValue.short(v) }

    static func recordJSON(_ r: KeyRecord, state: String, extra: [String: Any]) -> [String: Any] {
        var o = r.jsonObject()
        o["state"] = state
        for (k, v) in extra {
            if case Optional<Any>.none = v as Any? { o[k] = NSNull() } else { o[k] = v }
        }
        return o
    }

    static func normalize(_ v: Any) -> Any {
        if let o = v as? [String: Any] { return o.mapValues(normalize) }
        if let a = v as? [Any] { return a.map(normalize) }
        if let opt = v as Any?, case Optional<Any>.some(let inner) = opt, !(inner is NSNull) { return inner }
        return v
    }

    static func printJSON(_ o: [String: Any]) {
        printJSONValue(clean(o))
    }

    static func printJSONArray(_ a: [[String: Any]]) {
        printJSONValue(a.map(clean))
    }

    /// Prints JSON; a value JSON cannot hold (a NaN) is a one-line error, exit 1.
    static func printJSONValue(_ v: Any) {
        guard JSONSerialization.isValidJSONObject(v),
            let data = try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .withoutEscapingSlashes])
        else {
            FileHandle.standardError.write("keygate: cannot print this as JSON\n".data(using: .utf8)!)
            exit(1)
        }
        print(String(decoding: data, as: UTF8.self))
    }

    /// Optionals wrapped in Any become their value or null.
    static func clean(_ o: [String: Any]) -> [String: Any] {
        var out: [String: Any] = [:]
        for (k, v) in o {
            let mirror = Mirror(reflecting: v)
            if mirror.displayStyle == .optional {
                out[k] = mirror.children.first?.value ?? NSNull()
            } else {
                out[k] = v
            }
        }
        return out
    }
}
