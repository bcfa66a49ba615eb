/// A direct JSON codec for key records: a million lines must load in seconds and a CLI change
/// to a 100,000-key store must take well under a second, which Foundation's coders do not do.
/// Fields are written in sorted order, absent optionals omitted, so lines are stable.
public enum KeyRecordCodec {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    // MARK: decoding

    public static func decode(_ line: UnsafeBufferPointer<UInt8>) throws(Failure) -> KeyRecord {
        var p = Reader(bytes: line)
        var id: String?, name: String?, hash: String?, status: KeyRecord.Status?, created: String?, updated: String?
        var r = KeyRecord(id: "", name: "", hash: "", createdAt: "")
        try p.members { (p, key) throws(Failure) in
                switch key {
                case "id": id = try p.string()
                case "name": name = try p.string()
                case "hash": hash = try p.string()
                case "description": r.description = try p.optionalString()
                case "owner": r.owner = try p.optionalString()
                case "scopes": r.scopes = try p.stringArray(key)
                case "allow_ips": r.allow_ips = try p.stringArray(key)
                case "client_certs": r.client_certs = try p.stringArray(key)
                case "countries":
                    try p.members { (p, k) throws(Failure) in
                        switch k {
                        case "allow": r.countries.allow = try p.stringArray("countries.allow")
                        case "deny": r.countries.deny = try p.stringArray("countries.deny")
                        default: throw Failure("unknown field \"countries.\(k)\"")
                        }
                    }
                case "not_before": r.not_before = try p.optionalString()
                case "expires_at": r.expires_at = try p.optionalString()
                case "rate": r.rate = try p.optionalString()
                case "burst": r.burst = try p.optionalInt(key)
                case "quota": r.quota = try p.optionalString()
                case "status":
                    let s = try p.string()
                    guard let st = KeyRecord.Status(rawValue: s) else { throw Failure("status must be active, disabled or revoked, not \"\(s)\"") }
                    status = st
                case "created_at": created = try p.string()
                case "updated_at": updated = try p.string()
                case "revoked_at": r.revoked_at = try p.optionalString()
                case "revoke_reason": r.revoke_reason = try p.optionalString()
                case "rotated_from": r.rotated_from = try p.optionalString()
                case "rotated_to": r.rotated_to = try p.optionalString()
                default: throw Failure("unknown field \"\(key)\"")
                }
        }
        p.skipSpace()
        guard p.i == p.bytes.count else { throw Failure("text after the record") }
        guard let id else { throw Failure("missing field \"id\"") }
        guard let name else { throw Failure("missing field \"name\"") }
        guard let hash else { throw Failure("missing field \"hash\"") }
        guard let status else { throw Failure("missing field \"status\"") }
        guard let created else { throw Failure("missing field \"created_at\"") }
        r.id = id
        r.name = name
        r.hash = hash
        r.status = status
        r.created_at = created
        r.updated_at = updated ?? created
        for (field, value) in [("not_before", r.not_before), ("expires_at", r.expires_at), ("created_at", created)] {
            if let v = value, Timestamp.parseMillis(v) == nil { throw Failure("\(field) \"\(v)\" is not an RFC 3339 time") }
        }
        // Limits are checked here, not where they are used: a value the gate cannot enforce
        // makes the line invalid (the last good store stays in force), never a key without limits.
        if let rate = r.rate, RateText.parse(rate) == nil { throw Failure("rate \"\(rate)\" is not a rate (like 100/s; at most \(Bounds.rateCount) per unit)") }
        if let b = r.burst, !(1...Bounds.burst).contains(b) { throw Failure("burst must be from 1 to \(Bounds.burst)") }
        if let q = r.quota, QuotaText.parse(q) == nil { throw Failure("quota \"\(q)\" is not a quota (like 100000/day; at most \(Bounds.quotaCount))") }
        for f in r.client_certs where KeyDigest(stored: f) == nil {
            throw Failure("client_certs: \"\(f)\" is not sha256: and 64 lowercase hex digits")
        }
        for c in r.countries.allow + r.countries.deny where !CountryCode.isValid(c) {
            throw Failure("country \"\(c)\" is not an ISO 3166-1 alpha-2 code")
        }
        return r
    }

    /// Reads only `id` and `hash` of a record line, skipping every other value.
    public static func peekIDAndHash(_ line: UnsafeBufferPointer<UInt8>) throws(Failure) -> (String, KeyDigest) {
        var p = Reader(bytes: line)
        var id: String?
        var hash: KeyDigest?
        try p.members { (p, key) throws(Failure) in
            switch key {
            case "id": id = try p.string()
            case "hash":
                let r = try p.plainString()
                guard let d = KeyDigest(storedBytes: UnsafeBufferPointer(rebasing: line[r])) else {
                    throw Failure("hash must be sha256: and 64 lowercase hex digits")
                }
                hash = d
            default: try p.skipValue()
            }
        }
        p.skipSpace()
        guard p.i == p.bytes.count else { throw Failure("text after the record") }
        guard let id else { throw Failure("missing field \"id\"") }
        guard let hash else { throw Failure("missing field \"hash\"") }
        return (id, hash)
    }

    struct Reader {
        /// Walks the members of a JSON object, handing each key to `body` to read its value.
        mutating func members(_ body: (inout Reader, String) throws(Failure) -> Void) throws(Failure) {
            try expect(UInt8(ascii: "{"))
            skipSpace()
            if peek() == UInt8(ascii: "}") {
                i += 1
                return
            }
            while true {
                let key = try string()
                try expect(UInt8(ascii: ":"))
                try body(&self, key)
                if try !nextMember() { return }
            }
        }

        /// A string without escapes, as the byte range of its contents.
        mutating func plainString() throws(Failure) -> Range<Int> {
            skipSpace()
            guard peek() == UInt8(ascii: "\"") else { throw Failure("not valid JSON (expected a string at column \(i + 1))") }
            i += 1
            let start = i
            while i < bytes.count, bytes[i] != UInt8(ascii: "\""), bytes[i] != UInt8(ascii: "\\") { i += 1 }
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Failure("not valid JSON (unterminated or escaped string)") }
            i += 1
            return start..<(i - 1)
        }

        /// Skips one JSON value of any kind.
        mutating func skipValue() throws(Failure) {
            skipSpace()
            switch peek() {
            case UInt8(ascii: "\""):
                _ = try string()
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                var depth = 0
                while i < bytes.count {
                    let b = bytes[i]
                    if b == UInt8(ascii: "\"") {
                        _ = try string()
                        continue
                    }
                    if b == UInt8(ascii: "[") || b == UInt8(ascii: "{") { depth += 1 }
                    if b == UInt8(ascii: "]") || b == UInt8(ascii: "}") {
                        depth -= 1
                        if depth == 0 {
                            i += 1
                            return
                        }
                    }
                    i += 1
                }
                throw Failure("not valid JSON (unterminated value)")
            default:
                let start = i
                while i < bytes.count, bytes[i] != UInt8(ascii: ","), bytes[i] != UInt8(ascii: "}"), bytes[i] != 0x20 { i += 1 }
                if i == start { throw Failure("not valid JSON (expected a value at column \(i + 1))") }
            }
        }

        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0D || bytes[i] == 0x0A { i += 1 }
        }

        func peek() -> UInt8 { i < bytes.count ? bytes[i] : 0 }

        mutating func expect(_ b: UInt8) throws(Failure) {
            skipSpace()
            guard i < bytes.count, bytes[i] == b else { throw Failure("not valid JSON (expected '\(Character(UnicodeScalar(b)))' at column \(i + 1))") }
            i += 1
        }

        /// After a member: true if another follows (","), false at "}".
        mutating func nextMember() throws(Failure) -> Bool {
            skipSpace()
            guard i < bytes.count else { throw Failure("not valid JSON (unterminated object)") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
                return true
            }
            if bytes[i] == UInt8(ascii: "}") {
                i += 1
                return false
            }
            throw Failure("not valid JSON (expected ',' or '}' at column \(i + 1))")
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let n = word.utf8CodeUnitCount
            guard i + n <= bytes.count else { return false }
            for k in 0..<n where bytes[i + k] != word.utf8Start[k] { return false }
            i += n
            return true
        }

        mutating func optionalString() throws(Failure) -> String? {
            skipSpace()
            if literal("null") { return nil }
            return try string()
        }

        mutating func optionalInt(_ field: String) throws(Failure) -> Int? {
            skipSpace()
            if literal("null") { return nil }
            var v = 0
            let start = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39, i - start < 18 {
                v = v * 10 + Int(bytes[i] - 0x30)
                i += 1
            }
            guard i > start else { throw Failure("\(field) must be a whole number") }
            return v
        }

        mutating func stringArray(_ field: String) throws(Failure) -> [String] {
            skipSpace()
            guard peek() == UInt8(ascii: "[") else { throw Failure("\(field) must be a list of strings") }
            i += 1
            var out: [String] = []
            skipSpace()
            if peek() == UInt8(ascii: "]") {
                i += 1
                return out
            }
            while true {
                out.append(try string())
                skipSpace()
                if peek() == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                guard peek() == UInt8(ascii: "]") else { throw Failure("\(field) must be a list of strings") }
                i += 1
                return out
            }
        }

        mutating func string() throws(Failure) -> String {
            skipSpace()
            guard peek() == UInt8(ascii: "\"") else { throw Failure("not valid JSON (expected a string at column \(i + 1))") }
            i += 1
            let start = i
            // Fast path: no escapes.
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\"") {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
                    i += 1
                    return s
                }
                if b == UInt8(ascii: "\\") { break }
                if b < 0x20 { throw Failure("not valid JSON (control character in a string)") }
                i += 1
            }
            var out = Array(bytes[start..<i])
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "\"") {
                    i += 1
                    return String(decoding: out, as: UTF8.self)
                }
                if b < 0x20 { throw Failure("not valid JSON (control character in a string)") }
                if b != UInt8(ascii: "\\") {
                    out.append(b)
                    i += 1
                    continue
                }
                guard i + 1 < bytes.count else { break }
                let e = bytes[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        // A high surrogate must be followed by a low one; anything else is not text.
                        guard literal("\\u") else { throw Failure("not valid JSON (lone surrogate in a \\u escape)") }
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw Failure("not valid JSON (lone surrogate in a \\u escape)") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw Failure("not valid JSON (bad \\u escape)") }
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw Failure("not valid JSON (bad escape)")
                }
            }
            throw Failure("not valid JSON (unterminated string)")
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            guard i + 4 <= bytes.count else { throw Failure("not valid JSON (bad \\u escape)") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[i]
                let d: UInt32
                switch b {
                case 0x30...0x39: d = UInt32(b - 0x30)
                case 0x41...0x46: d = UInt32(b - 0x41 + 10)
                case 0x61...0x66: d = UInt32(b - 0x61 + 10)
                default: throw Failure("not valid JSON (bad \\u escape)")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }
    }

    // MARK: encoding

    /// Appends one JSON line (with newline) for `r`, keys in sorted order.
    public static func encode(_ r: KeyRecord, to out: inout [UInt8]) {
        var first = true
        func key(_ k: StaticString) {
            out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
            first = false
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: UnsafeBufferPointer(start: k.utf8Start, count: k.utf8CodeUnitCount))
            out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        }
        func str(_ k: StaticString, _ v: String?) {
            guard let v else { return }
            key(k)
            JSONBytes.appendString(v, to: &out)
        }
        func list(_ v: [String]) {
            out.append(UInt8(ascii: "["))
            for (i, s) in v.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONBytes.appendString(s, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        key("allow_ips")
        list(r.allow_ips)
        if let b = r.burst {
            key("burst")
            JSONBytes.appendInt(b, to: &out)
        }
        if !r.client_certs.isEmpty {
            key("client_certs")
            list(r.client_certs)
        }
        key("countries")
        out.append(contentsOf: #"{"allow":"#.utf8)
        list(r.countries.allow)
        out.append(contentsOf: #","deny":"#.utf8)
        list(r.countries.deny)
        out.append(UInt8(ascii: "}"))
        str("created_at", r.created_at)
        str("description", r.description)
        str("expires_at", r.expires_at)
        str("hash", r.hash)
        str("id", r.id)
        str("name", r.name)
        str("not_before", r.not_before)
        str("owner", r.owner)
        str("quota", r.quota)
        str("rate", r.rate)
        str("revoke_reason", r.revoke_reason)
        str("revoked_at", r.revoked_at)
        str("rotated_from", r.rotated_from)
        str("rotated_to", r.rotated_to)
        key("scopes")
        list(r.scopes)
        str("status", r.status.rawValue)
        str("updated_at", r.updated_at)
        out.append(contentsOf: "}\n".utf8)
    }
}
