import KeygateHTTP
#if canImport(Glibc)
import Glibc
#endif

/// RFC 3339 timestamps in UTC, formatted and parsed without Foundation (the usage log formats
/// one per request).
public enum Timestamp {
    /// Milliseconds since the epoch, from the real-time clock.
    public static func nowMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    public static func nowSeconds() -> Int64 { nowMillis() / 1000 }

    /// Appends `2026-11-23T18:00:00.123Z` (or without the fraction) to `out`.
    public static func append(millis: Int64, fraction: Bool = true, to out: inout [UInt8]) {
        let secs = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
        let ms = Int(millis - secs * 1000)
        let (y, mo, d) = civil(fromDays: secs >= 0 ? secs / 86400 : (secs - 86399) / 86400)
        let sod = Int(((secs % 86400) + 86400) % 86400)
        func two(_ v: Int) { out.append(UInt8(0x30 + v / 10)); out.append(UInt8(0x30 + v % 10)) }
        let year = Int(y)
        out.append(UInt8(0x30 + (year / 1000) % 10)); out.append(UInt8(0x30 + (year / 100) % 10))
        two(year % 100)
        out.append(UInt8(ascii: "-")); two(mo)
        out.append(UInt8(ascii: "-")); two(d)
        out.append(UInt8(ascii: "T")); two(sod / 3600)
        out.append(UInt8(ascii: ":")); two((sod / 60) % 60)
        out.append(UInt8(ascii: ":")); two(sod % 60)
        if fraction {
            out.append(UInt8(ascii: "."))
            out.append(UInt8(0x30 + ms / 100)); two(ms % 100)
        }
        out.append(UInt8(ascii: "Z"))
    }

    /// Formats many timestamps of the same second cheaply: the date and time are worked out
    /// once per second, only the milliseconds per call. One per thread (a loop's usage batch).
    public struct SecondCache {
        var second: Int64 = .min
        var prefix: [UInt8] = []

        public init() {}

        public mutating func append<S: ByteSink>(millis: Int64, to out: inout S) {
            let secs = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
            if secs != second {
                prefix.removeAll(keepingCapacity: true)
                Timestamp.append(millis: secs * 1000, fraction: false, to: &prefix)
                prefix.removeLast()  // the "Z"
                second = secs
            }
            out.appendBytes(prefix)
            let ms = Int(millis - secs * 1000)
            out.append(UInt8(ascii: "."))
            out.append(UInt8(0x30 + ms / 100))
            out.append(UInt8(0x30 + (ms / 10) % 10))
            out.append(UInt8(0x30 + ms % 10))
            out.append(UInt8(ascii: "Z"))
        }
    }

    /// The last second with a four-digit year, 9999-12-31T23:59:59Z.
    public static let latestSeconds: Int64 = 253_402_300_799

    /// Formats `seconds`, held to 1970…9999 so that any number, read from wherever, formats.
    public static func format(seconds: Int64) -> String {
        var out: [UInt8] = []
        append(millis: min(max(seconds, 0), latestSeconds) * 1000, fraction: false, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public static func format(millis: Int64) -> String {
        var out: [UInt8] = []
        append(millis: millis, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses RFC 3339 (`2026-01-02T03:04:05Z`, optional fraction, `Z` or `±hh:mm`) or a plain
    /// date `2026-01-02` (midnight UTC). Returns epoch milliseconds.
    public static func parseMillis(_ text: String) -> Int64? {
        var t = text
        return t.withUTF8 { parseMillis(bytes: $0) }
    }

    public static func parseMillis(bytes s: UnsafeBufferPointer<UInt8>) -> Int64? {
        func num(_ a: Int, _ n: Int) -> Int? {
            guard a + n <= s.count else { return nil }
            var v = 0
            for i in a..<(a + n) {
                guard s[i] >= 0x30 && s[i] <= 0x39 else { return nil }
                v = v * 10 + Int(s[i] - 0x30)
            }
            return v
        }
        guard s.count >= 10, let y = num(0, 4), s[4] == UInt8(ascii: "-"), let mo = num(5, 2), s[7] == UInt8(ascii: "-"),
            let d = num(8, 2), (1...12).contains(mo), (1...daysIn(month: mo, year: y)).contains(d)
        else { return nil }
        let days = Self.days(fromCivil: Int64(y), mo, d)
        if s.count == 10 { return days * 86_400_000 }
        guard s.count >= 20, s[10] == UInt8(ascii: "T") || s[10] == UInt8(ascii: "t") || s[10] == 0x20,
            let h = num(11, 2), s[13] == UInt8(ascii: ":"), let mi = num(14, 2), s[16] == UInt8(ascii: ":"), let se = num(17, 2),
            h < 24, mi < 60, se < 61
        else { return nil }
        var i = 19
        var ms = 0
        if s[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 100
            let start = i
            while i < s.count, s[i] >= 0x30 && s[i] <= 0x39 {
                ms += Int(s[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            if i == start { return nil }
        }
        guard i < s.count else { return nil }
        var offset = 0
        if s[i] == UInt8(ascii: "Z") || s[i] == UInt8(ascii: "z") {
            i += 1
        } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
            guard let oh = num(i + 1, 2), s.count > i + 3, s[i + 3] == UInt8(ascii: ":"), let om = num(i + 4, 2), oh < 24, om < 60 else { return nil }
            offset = (oh * 60 + om) * 60 * (s[i] == UInt8(ascii: "+") ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == s.count else { return nil }
        let secs = days * 86400 + Int64(h * 3600 + mi * 60 + min(se, 59)) - Int64(offset)
        return secs * 1000 + Int64(ms)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's civil-from-days algorithms.
    static func days(fromCivil y0: Int64, _ m: Int, _ d: Int) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64((m + 9) % 12)
        let doy = (153 * mp + 2) / 5 + Int64(d) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int, Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = Int(doy - (153 * mp + 2) / 5 + 1)
        let m = Int(mp < 10 ? mp + 3 : mp - 9)
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
