/// A route rule: `METHOD /path` where `*` as method matches any method, `*` as a segment matches
/// exactly one segment, and a trailing `/**` matches any rest (including nothing).
public struct RoutePattern: Sendable, Equatable, CustomStringConvertible {
    public let method: [UInt8]?  // nil = any
    public let segments: [[UInt8]]  // "*" = one segment
    public let anyRest: Bool
    public let text: String

    public struct Invalid: Error { public let message: String }

    public init(_ text: String) throws(Invalid) {
        self.text = text
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 else { throw Invalid(message: "route \"\(text)\" must be \"METHOD /path\"") }
        let m = String(parts[0])
        if m == "*" {
            method = nil
        } else {
            guard m.utf8.allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A) || $0 == UInt8(ascii: "-") }) else {
                throw Invalid(message: "route \"\(text)\": method must be upper-case letters or *")
            }
            method = Array(m.utf8)
        }
        let path = String(parts[1])
        guard path.hasPrefix("/") else { throw Invalid(message: "route \"\(text)\": path must start with /") }
        if path.contains("?") || path.contains("#") { throw Invalid(message: "route \"\(text)\": path cannot hold a query or fragment") }
        var segs = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { Array($0.utf8) }
        var rest = false
        if segs.last == Array("**".utf8) {
            rest = true
            segs.removeLast()
        }
        for s in segs {
            if s == Array("**".utf8) { throw Invalid(message: "route \"\(text)\": ** is allowed only as the last segment") }
            if s == Array(".".utf8) || s == Array("..".utf8) { throw Invalid(message: "route \"\(text)\" has a dot segment and can never match") }
            if s.contains(UInt8(ascii: "*")) && s != [UInt8(ascii: "*")] {
                throw Invalid(message: "route \"\(text)\": * must stand for a whole segment")
            }
        }
        if segs == [[]] && !rest { segs = [[]] }  // "/" is one empty segment
        segments = segs
        anyRest = rest
    }

    /// Matches a method and a normalised path (as `PathNormalizer` produces).
    public func matches(method m: UnsafeBufferPointer<UInt8>, path: [UInt8]) -> Bool {
        path.withUnsafeBufferPointer { matches(method: m, path: $0) }
    }

    /// As above, for a path read where it lies (no copy).
    public func matches(method m: UnsafeBufferPointer<UInt8>, path: UnsafeBufferPointer<UInt8>) -> Bool {
        if let method {
            guard m.count == method.count else { return false }
            for i in 0..<m.count where m[i] != method[i] { return false }
        }
        var seg = 0
        var i = 1  // skip the leading "/"
        let n = path.count
        while seg < segments.count {
            if i > n { return false }
            var e = i
            while e < n, path[e] != UInt8(ascii: "/") { e += 1 }
            let want = segments[seg]
            if !(want.count == 1 && want[0] == UInt8(ascii: "*")) {
                guard e - i == want.count else { return false }
                for k in 0..<want.count where path[i + k] != want[k] { return false }
            }
            seg += 1
            i = e + 1
        }
        return anyRest || i > n
    }

    public var description: String { text }
}

/// Normalises a request path for matching and forwarding (RFC 3986 §6.2.2): decodes
/// percent-escapes of unreserved characters only, writes other escapes in upper case, and
/// resolves `.` and `..` segments, so `/a/../admin` and `/%2e%2e/admin` are seen as `/admin`.
/// What is matched is what is forwarded, so no upstream can decode it into something else.
public enum PathNormalizer {
    /// What an encoded `/` or `\` (`%2F`, `%5C`) in a path becomes; `reject` is refused before
    /// normalising.
    public enum EscapedSlashes: String, Sendable {
        case reject, unescape_and_forward, keep
    }

    /// Whether the path holds `%2F` or `%5C` in any case.
    public static func hasEscapedSlash(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> Bool {
        var i = r.lowerBound
        while i + 2 < r.upperBound {
            if p[i] == UInt8(ascii: "%") {
                let a = p[i + 1]
                let b = p[i + 2] | 0x20
                if (a == UInt8(ascii: "2") && b == UInt8(ascii: "f")) || (a == UInt8(ascii: "5") && b == UInt8(ascii: "c")) { return true }
            }
            i += 1
        }
        return false
    }

    /// True when `normalize` would return the path unchanged: no escapes and no dot segments.
    /// The common case costs one scan and no allocation.
    public static func isCanonical(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> Bool {
        var segmentLength = 0
        var dotsOnly = true
        for i in r {
            let b = p[i]
            if b == UInt8(ascii: "%") { return false }
            if b == UInt8(ascii: "/") {
                if dotsOnly && (segmentLength == 1 || segmentLength == 2) { return false }
                segmentLength = 0
                dotsOnly = true
            } else {
                segmentLength += 1
                if b != UInt8(ascii: ".") { dotsOnly = false }
            }
        }
        return !(dotsOnly && (segmentLength == 1 || segmentLength == 2))
    }

    public static func normalize(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, escapedSlashes: EscapedSlashes = .keep) -> [UInt8] {
        var decoded: [UInt8] = []
        decoded.reserveCapacity(r.count)
        var i = r.lowerBound
        while i < r.upperBound {
            let b = p[i]
            if b == UInt8(ascii: "%"), i + 2 < r.upperBound, let v = hexPair(p[i + 1], p[i + 2]) {
                if isUnreserved(v) || (escapedSlashes == .unescape_and_forward && (v == UInt8(ascii: "/") || v == UInt8(ascii: "\\"))) {
                    // An unescaped backslash is a separator, as the upstreams that decode it read it.
                    decoded.append(v == UInt8(ascii: "\\") ? UInt8(ascii: "/") : v)
                } else {
                    // Every other escape stays encoded, in one canonical (upper-case) spelling.
                    decoded.append(b)
                    decoded.append(upper(p[i + 1]))
                    decoded.append(upper(p[i + 2]))
                }
                i += 3
                continue
            }
            decoded.append(b)
            i += 1
        }
        // Remove dot segments (RFC 3986 §5.2.4) over "/"-separated segments.
        var out: [UInt8] = []
        out.reserveCapacity(decoded.count)
        var segStarts: [Int] = []
        var s = 0
        let n = decoded.count
        while s < n {
            // decoded[s] == "/"
            var e = s + 1
            while e < n, decoded[e] != UInt8(ascii: "/") { e += 1 }
            let len = e - s - 1
            if len == 1 && decoded[s + 1] == UInt8(ascii: ".") {
                if e == n { out.append(UInt8(ascii: "/")); segStarts.append(out.count - 1) }
            } else if len == 2 && decoded[s + 1] == UInt8(ascii: ".") && decoded[s + 2] == UInt8(ascii: ".") {
                if let last = segStarts.popLast() { out.removeSubrange(last...) }
                if e == n { out.append(UInt8(ascii: "/")); segStarts.append(out.count - 1) }
            } else {
                segStarts.append(out.count)
                out.append(contentsOf: decoded[s..<e])
            }
            s = e
        }
        if out.isEmpty { out = [UInt8(ascii: "/")] }
        return out
    }

    /// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
    static func isUnreserved(_ v: UInt8) -> Bool {
        (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A) || (v >= 0x30 && v <= 0x39) || v == 0x2D || v == 0x2E || v == 0x5F || v == 0x7E
    }

    static func upper(_ b: UInt8) -> UInt8 { (b >= 0x61 && b <= 0x7A) ? b - 0x20 : b }
    static func hexPair(_ a: UInt8, _ b: UInt8) -> UInt8? {
        func h(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        guard let x = h(a), let y = h(b) else { return nil }
        return x << 4 | y
    }
}
