/// A parsed upstream response head. Ranges point into `bytes`.
public struct ResponseHead: Sendable {
    public var bytes: [UInt8]
    public var status: Int
    public var version: HTTPVersion
    /// The status line without CRLF.
    public var statusLine: Range<Int>
    public var fields: [HeaderField]
    public var framing: BodyFraming
    /// Whether the upstream will keep the connection open after this response.
    public var keepAlive: Bool
    public var connectionOptions: [Range<Int>]

    public var isInterim: Bool { status >= 100 && status < 200 }
}

/// Parses upstream response heads. Upstream mistakes are reported as 502.
public enum ResponseParser {
    public static func parse(_ head: UnsafeRawBufferPointer, requestWasHead: Bool, maxFields: Int = 200) throws(HTTPParseError) -> ResponseHead {
        let bytes = [UInt8](head)
        var out: ResponseHead?
        var failure: HTTPParseError?
        bytes.withUnsafeBufferPointer { p in
            do throws(HTTPParseError) {
                out = try parse(p, requestWasHead: requestWasHead, maxFields: maxFields)
            } catch {
                failure = HTTPParseError(502, "upstream sent a malformed response: \(error.reason)")
            }
        }
        if let failure { throw failure }
        out!.bytes = bytes
        return out!
    }

    /// Parses in place: the ranges of the result point into `p`, and its `bytes` stay empty.
    /// For a caller that uses the head while `p` is still valid, this saves the copy.
    public static func parseInPlace(_ p: UnsafeBufferPointer<UInt8>, requestWasHead: Bool, maxFields: Int = 200) throws(HTTPParseError) -> ResponseHead {
        do {
            return try parse(p, requestWasHead: requestWasHead, maxFields: maxFields)
        } catch {
            throw HTTPParseError(502, "upstream sent a malformed response: \(error.reason)")
        }
    }

    static func parse(_ p: UnsafeBufferPointer<UInt8>, requestWasHead: Bool, maxFields: Int) throws(HTTPParseError) -> ResponseHead {
        let count = p.count
        var eol = 0
        while eol < count, p[eol] != 0x0D { eol += 1 }
        // "HTTP/1.x NNN" at least.
        guard eol >= 12, p.equalsLowercased(0..<7, "http/1."), p[5] == UInt8(ascii: "1") else { throw .bad("malformed status line") }
        let version: HTTPVersion
        switch p[7] {
        case UInt8(ascii: "1"): version = .http11
        case UInt8(ascii: "0"): version = .http10
        default: throw .bad("unsupported version")
        }
        guard p[8] == 0x20, ByteClass.isDigit(p[9]), ByteClass.isDigit(p[10]), ByteClass.isDigit(p[11]) else { throw .bad("malformed status line") }
        let status = Int(p[9] - 0x30) * 100 + Int(p[10] - 0x30) * 10 + Int(p[11] - 0x30)
        if status < 100 { throw .bad("malformed status code") }
        if eol > 12 {
            guard p[12] == 0x20 else { throw .bad("malformed status line") }
            for j in 13..<eol where !ByteClass.isFieldValue(p[j]) { throw .bad("control character in reason phrase") }
        }
        var fields: [HeaderField] = []
        fields.reserveCapacity(16)
        try FieldLine.forEachLine(p, from: eol + 2, to: count) { (line) throws(HTTPParseError) in
            if fields.count >= maxFields { throw .bad("too many fields") }
            fields.append(try FieldLine.parse(p, line))
        }
        var contentLength: UInt64? = nil
        var transferEncoding = false
        var chunked = false
        var keepAlive = version == .http11
        var options: [Range<Int>] = []
        for f in fields {
            let n = f.name
            if p.equalsLowercased(n, "content-length") {
                let v = try parseContentLength(p, f.value)
                if let old = contentLength, old != v { throw .bad("conflicting Content-Length") }
                contentLength = v
            } else if p.equalsLowercased(n, "transfer-encoding") {
                transferEncoding = true
                // Only the final coding decides the framing (RFC 9112 §6.3).
                var last: Range<Int>? = nil
                try forEachListElement(p, f.value) { (t) throws(HTTPParseError) in last = t }
                chunked = last.map { p.equalsLowercased($0, "chunked") } ?? false
            } else if p.equalsLowercased(n, "connection") {
                try forEachListElement(p, f.value) { (t) throws(HTTPParseError) in
                    if p.equalsLowercased(t, "close") {
                        keepAlive = false
                    } else if p.equalsLowercased(t, "keep-alive") {
                        if version == .http10 { keepAlive = true }
                    } else {
                        options.append(t)
                    }
                }
            }
        }
        if transferEncoding && contentLength != nil { throw .bad("both Content-Length and Transfer-Encoding") }
        let framing: BodyFraming
        if requestWasHead || status < 200 || status == 204 || status == 304 {
            framing = .none
        } else if transferEncoding {
            framing = chunked ? .chunked : .untilClose
        } else if let length = contentLength {
            framing = length == 0 ? .none : .contentLength(length)
        } else {
            framing = .untilClose
        }
        if framing == .untilClose { keepAlive = false }
        return ResponseHead(
            bytes: [], status: status, version: version, statusLine: 0..<eol, fields: fields, framing: framing,
            keepAlive: keepAlive, connectionOptions: options)
    }
}
