/// Limits applied while parsing a request head.
public struct RequestLimits: Sendable {
    public var maxHeadBytes: Int
    public var maxFields: Int
    public var maxLineBytes: Int
    public var maxTargetBytes: Int
    public var maxMethodBytes: Int

    public init(maxHeadBytes: Int = 32768, maxFields: Int = 100, maxLineBytes: Int = 8192, maxTargetBytes: Int = 8192, maxMethodBytes: Int = 32) {
        self.maxHeadBytes = maxHeadBytes
        self.maxFields = maxFields
        self.maxLineBytes = maxLineBytes
        self.maxTargetBytes = maxTargetBytes
        self.maxMethodBytes = maxMethodBytes
    }
}

/// Strict request-head parsing per RFC 9110/9112 and keygate's HTTP rules.
public enum RequestParser {
    /// Parses a complete head (as delimited by `HeadScanner`): `head` runs from the request line
    /// through the final empty line.
    public static func parse(_ head: UnsafeRawBufferPointer, limits: RequestLimits = RequestLimits()) throws(HTTPParseError) -> RequestHead {
        var bytes = [UInt8](head)
        let count = bytes.count
        // Returned straight out of the closure: parking it in an optional first cost a copy of
        // the head (three retains and releases) per request.
        var r = try bytes.withUnsafeBufferPointer { (p) throws(HTTPParseError) -> RequestHead in try parse(p, count: count, limits: limits) }
        if r.target.lowerBound == -1 {
            // Absolute-form with an empty path means "/" (RFC 9112 §3.2.2).
            bytes.append(UInt8(ascii: "/"))
            r.target = count..<(count + 1)
            r.path = r.target
        }
        r.bytes = bytes
        return r
    }

    static func parse(_ p: UnsafeBufferPointer<UInt8>, count: Int, limits: RequestLimits) throws(HTTPParseError) -> RequestHead {
        // Request line.
        var eol = 0
        while eol < count, p[eol] != 0x0D { eol += 1 }
        guard eol < count else { throw .bad("incomplete request line") }
        var i = 0
        while i < eol, ByteClass.isTchar(p[i]) { i += 1 }
        let method = 0..<i
        if method.isEmpty { throw .bad("invalid method") }
        if method.count > limits.maxMethodBytes { throw .bad("method too long") }
        guard i < eol, p[i] == 0x20 else { throw .bad("malformed request line") }
        i += 1
        let ts = i
        while i < eol, p[i] != 0x20 { i += 1 }
        var target = ts..<i
        if target.isEmpty { throw .bad("empty request target") }
        if target.count > limits.maxTargetBytes { throw .uriTooLong }
        if i == eol {
            // "GET /path" with no version: HTTP/0.9, which cannot read a proper answer.
            throw HTTPParseError(0, "HTTP/0.9 request")
        }
        i += 1
        let vs = i
        let version: HTTPVersion
        let v = vs..<eol
        if v.count == 8, p.equalsLowercased(vs..<(vs + 5), "http/"), p[vs + 5] >= 0x30, p[vs + 5] <= 0x39, p[vs + 6] == UInt8(ascii: "."), p[vs + 7] >= 0x30, p[vs + 7] <= 0x39 {
            guard p[vs] == UInt8(ascii: "H"), p[vs + 1] == UInt8(ascii: "T"), p[vs + 2] == UInt8(ascii: "T"), p[vs + 3] == UInt8(ascii: "P") else {
                throw .bad("malformed HTTP version")
            }
            switch (p[vs + 5], p[vs + 7]) {
            case (0x31, 0x31): version = .http11
            case (0x31, 0x30): version = .http10
            default: throw HTTPParseError(505, "HTTP version not supported")
            }
        } else {
            throw .bad("malformed request line")
        }

        if p.equalsLowercased(method, "connect") { throw HTTPParseError(405, "CONNECT is not supported") }

        // Target form.
        var absoluteAuthority: Range<Int>? = nil
        for j in target where !ByteClass.isTargetChar(p[j]) {
            throw .bad("invalid character in request target")
        }
        try checkPercentEncoding(p, target)
        if p[target.lowerBound] == UInt8(ascii: "/") {
            // origin-form
        } else if target.count == 1 && p[target.lowerBound] == UInt8(ascii: "*") {
            if !(method.count == 7 && p.equalsLowercased(method, "options")) { throw .bad("asterisk target only with OPTIONS") }
        } else {
            // absolute-form: scheme "://" authority [path-abempty] [? query]
            var schemeEnd = target.lowerBound
            while schemeEnd < target.upperBound, p[schemeEnd] != UInt8(ascii: ":") { schemeEnd += 1 }
            let scheme = target.lowerBound..<schemeEnd
            guard p.equalsLowercased(scheme, "http") || p.equalsLowercased(scheme, "https"),
                schemeEnd + 3 <= target.upperBound, p[schemeEnd + 1] == UInt8(ascii: "/"), p[schemeEnd + 2] == UInt8(ascii: "/")
            else { throw .bad("invalid request target") }
            let as0 = schemeEnd + 3
            var ae = as0
            while ae < target.upperBound, p[ae] != UInt8(ascii: "/"), p[ae] != UInt8(ascii: "?") { ae += 1 }
            absoluteAuthority = as0..<ae
            if ae == target.upperBound {
                target = -1..<(-1)  // filled in by the caller with "/"
            } else if p[ae] == UInt8(ascii: "?") {
                throw .bad("absolute-form target without a path")
            } else {
                target = ae..<target.upperBound
            }
        }

        // Field lines.
        var fields: [HeaderField] = []
        fields.reserveCapacity(16)
        try FieldLine.forEachLine(p, from: eol + 2, to: count) { (line) throws(HTTPParseError) in
            if fields.count >= limits.maxFields { throw .tooManyFields }
            if line.count > limits.maxLineBytes { throw .headerTooLarge }
            fields.append(try FieldLine.parse(p, line))
        }

        // Field semantics that decide framing and routing.
        var hostField: Int? = nil
        var contentLength: UInt64? = nil
        var chunked = false
        var keepAlive = version == .http11
        var expectContinue = false
        var options: [Range<Int>] = []
        for (index, f) in fields.enumerated() {
            let n = f.name
            switch n.count {
            case 4 where p.equalsLowercased(n, "host"):
                if hostField != nil { throw .bad("more than one Host field") }
                try checkHost(p, f.value)
                hostField = index
            case 14 where p.equalsLowercased(n, "content-length"):
                if contentLength != nil { throw .bad("more than one Content-Length field") }
                contentLength = try parseContentLength(p, f.value)
            case 17 where p.equalsLowercased(n, "transfer-encoding"):
                if version != .http11 { throw .bad("Transfer-Encoding in an HTTP/1.0 request") }
                if chunked { throw .bad("more than one Transfer-Encoding field") }
                guard p.equalsLowercased(f.value, "chunked") else { throw HTTPParseError(501, "only chunked transfer coding is supported") }
                chunked = true
            case 10 where p.equalsLowercased(n, "connection"):
                try forEachListElement(p, f.value) { (token) throws(HTTPParseError) in
                    for j in token where !ByteClass.isTchar(p[j]) { throw .bad("invalid Connection option") }
                    if p.equalsLowercased(token, "close") {
                        keepAlive = false
                    } else if p.equalsLowercased(token, "keep-alive") {
                        if version == .http10 { keepAlive = true }
                    } else if p.equalsLowercased(token, "host") || p.equalsLowercased(token, "content-length") || p.equalsLowercased(token, "transfer-encoding") {
                        throw .bad("Connection names a field that cannot be hop-by-hop")
                    } else {
                        options.append(token)
                    }
                }
            case 6 where p.equalsLowercased(n, "expect"):
                guard p.equalsLowercased(f.value, "100-continue") else { throw HTTPParseError(417, "unsupported expectation") }
                if version == .http11 { expectContinue = true }
            default:
                break
            }
        }
        // "Connection: close" may come before "keep-alive" in the list; close wins.
        if keepAlive, let c = fields.firstIndex(where: { p.equalsLowercased($0.name, "connection") }) {
            var close = false
            for f in fields[c...] where p.equalsLowercased(f.name, "connection") {
                try forEachListElement(p, f.value) { (token) throws(HTTPParseError) in
                    if p.equalsLowercased(token, "close") { close = true }
                }
            }
            if close { keepAlive = false }
        }
        if version == .http11 && hostField == nil { throw .bad("missing Host field") }
        if let authority = absoluteAuthority {
            guard let h = hostField, sameBytesIgnoringCase(p, authority, fields[h].value) else {
                throw .bad("absolute-form authority differs from Host")
            }
        }
        if chunked && contentLength != nil { throw .bad("both Content-Length and Transfer-Encoding") }
        let framing: BodyFraming
        if chunked {
            framing = .chunked
        } else if let length = contentLength, length > 0 {
            framing = .contentLength(length)
        } else {
            framing = .none
        }
        var pathEnd = target.lowerBound
        while pathEnd < target.upperBound, p[pathEnd] != UInt8(ascii: "?") { pathEnd += 1 }
        return RequestHead(
            bytes: [], method: method, target: target, version: version, fields: fields, framing: framing,
            keepAlive: keepAlive, expectContinue: expectContinue && framing != .none, hostField: hostField, connectionOptions: options,
            path: target.lowerBound..<pathEnd)
    }

    static func checkPercentEncoding(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) throws(HTTPParseError) {
        var i = r.lowerBound
        while i < r.upperBound {
            if p[i] == UInt8(ascii: "%") {
                guard i + 2 < r.upperBound,
                    ByteClass.hexValue(p[i + 1]) != 0xFF, ByteClass.hexValue(p[i + 2]) != 0xFF
                else { throw .bad("invalid percent-encoding in request target") }
                i += 3
            } else {
                i += 1
            }
        }
    }

    /// Host = uri-host [ ":" port ]: reg-name, IPv4 or an IP literal in brackets; no userinfo.
    static func checkHost(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) throws(HTTPParseError) {
        if r.isEmpty { throw .bad("empty Host field") }
        var i = r.lowerBound
        if p[i] == UInt8(ascii: "[") {
            while i < r.upperBound, p[i] != UInt8(ascii: "]") {
                let b = p[i]
                if !(ByteClass.hexValue(b) != 0xFF || b == UInt8(ascii: ":") || b == UInt8(ascii: ".") || b == UInt8(ascii: "[")) {
                    throw .bad("invalid Host field")
                }
                i += 1
            }
            if i == r.upperBound { throw .bad("invalid Host field") }
            i += 1
        } else {
            while i < r.upperBound, p[i] != UInt8(ascii: ":") {
                let b = p[i]
                let ok = ByteClass.isAlpha(b) || ByteClass.isDigit(b) || "-._~!$&'()*+;=%".utf8.contains(b)
                if !ok { throw .bad("invalid Host field") }
                i += 1
            }
        }
        if i < r.upperBound {
            guard p[i] == UInt8(ascii: ":") else { throw .bad("invalid Host field") }
            i += 1
            if r.upperBound - i > 5 { throw .bad("invalid Host port") }
            while i < r.upperBound {
                if !ByteClass.isDigit(p[i]) { throw .bad("invalid Host port") }
                i += 1
            }
        }
    }

    static func sameBytesIgnoringCase(_ p: UnsafeBufferPointer<UInt8>, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var j = b.lowerBound
        for i in a {
            if lower(p[i]) != lower(p[j]) { return false }
            j += 1
        }
        return true
    }
}
