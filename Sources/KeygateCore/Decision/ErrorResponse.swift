/// The answers keygate gives itself: denials and protocol errors, each with a JSON body
/// `{"error": REASON, "message": "…", "request_id": "…"}`.
public enum ErrorResponse {
    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 417: return "Expectation Failed"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Error"
        }
    }

    /// Appends a complete response. `extraHeaders` are whole lines with CRLF. Returns the body size.
    @discardableResult
    public static func append(
        status: Int, error: String, message: String, requestID: [UInt8], close: Bool, extraHeaders: String = "", headOnly: Bool = false,
        to out: inout [UInt8]
    ) -> Int {
        var body: [UInt8] = []
        body.append(contentsOf: #"{"error":"#.utf8)
        JSONBytes.appendString(error, to: &body)
        body.append(contentsOf: #","message":"#.utf8)
        JSONBytes.appendString(message, to: &body)
        body.append(contentsOf: #","request_id":"#.utf8)
        JSONBytes.appendString(requestID, to: &body)
        body.append(contentsOf: "}\n".utf8)
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        JSONBytes.appendInt(status, to: &out)
        out.append(0x20)
        out.append(contentsOf: reasonPhrase(status).utf8)
        out.append(contentsOf: "\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ".utf8)
        JSONBytes.appendInt(body.count, to: &out)
        out.append(contentsOf: "\r\nX-Request-Id: ".utf8)
        out.append(contentsOf: requestID)
        out.append(contentsOf: "\r\n".utf8)
        out.append(contentsOf: extraHeaders.utf8)
        if close { out.append(contentsOf: "Connection: close\r\n".utf8) }
        out.append(contentsOf: "\r\n".utf8)
        if headOnly { return 0 }
        out.append(contentsOf: body)
        return body.count
    }

    /// A denial's bytes that do not change between requests, built once: only the request id,
    /// the body's length and `Connection: close` differ. Refusals are the cheapest answers a
    /// gate gives, and the ones an attacker can ask for fastest.
    struct Template {
        let headPrefix: [UInt8]  // status line … "Content-Length: "
        let extra: [UInt8]  // WWW-Authenticate, when 401
        let bodyPrefix: [UInt8]  // {"error":…,"request_id":"
        static let bodySuffix: [UInt8] = Array("\"}\n".utf8)

        init(_ reason: DenyReason) {
            headPrefix = Array("HTTP/1.1 \(reason.status) \(ErrorResponse.reasonPhrase(reason.status))\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ".utf8)
            extra =
                reason.status == 401
                ? Array((reason == .missing_key ? "WWW-Authenticate: Bearer realm=\"keygate\"\r\n" : "WWW-Authenticate: Bearer realm=\"keygate\", error=\"invalid_token\"\r\n").utf8)
                : []
            var body: [UInt8] = []
            body.append(contentsOf: #"{"error":"#.utf8)
            JSONBytes.appendString(reason.rawValue, to: &body)
            body.append(contentsOf: #","message":"#.utf8)
            JSONBytes.appendString(reason.message, to: &body)
            body.append(contentsOf: #","request_id":""#.utf8)
            bodyPrefix = body
        }
    }

    static let templates: [Template] = DenyReason.allCases.map(Template.init)

    /// Whether a request id can go into JSON as it is (ids are `[A-Za-z0-9._-]`; anything else
    /// takes the escaping path).
    static func plainID(_ id: [UInt8]) -> Bool {
        for b in id where !(Base62.isDigit(b) || b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")) { return false }
        return true
    }

    /// The denial for `reason`, with `WWW-Authenticate` on 401 and `Retry-After` on 429.
    @discardableResult
    public static func appendDenial(
        _ reason: DenyReason, requestID: [UInt8], close: Bool, headOnly: Bool, retryAfter: Int = 1, extraHeaders: String = "", to out: inout [UInt8]
    ) -> Int {
        if reason.status != 429 && extraHeaders.isEmpty && plainID(requestID) {
            let t = templates[reason.index]
            let bodySize = t.bodyPrefix.count + requestID.count + Template.bodySuffix.count
            out.reserveCapacity(out.count + t.headPrefix.count + t.extra.count + bodySize + requestID.count + 64)
            out.append(contentsOf: t.headPrefix)
            JSONBytes.appendInt(bodySize, to: &out)
            out.append("\r\nX-Request-Id: " as StaticString)
            out.append(contentsOf: requestID)
            out.append("\r\n" as StaticString)
            out.append(contentsOf: t.extra)
            if close { out.append("Connection: close\r\n" as StaticString) }
            out.append("\r\n" as StaticString)
            if headOnly { return 0 }
            out.append(contentsOf: t.bodyPrefix)
            out.append(contentsOf: requestID)
            out.append(contentsOf: Template.bodySuffix)
            return bodySize
        }
        // The same WWW-Authenticate line as the template's.
        var extra = extraHeaders + String(decoding: templates[reason.index].extra, as: UTF8.self)
        if reason.status == 429 { extra += "Retry-After: \(retryAfter)\r\n" }
        return append(status: reason.status, error: reason.rawValue, message: reason.message, requestID: requestID, close: close, extraHeaders: extra, headOnly: headOnly, to: &out)
    }
}
