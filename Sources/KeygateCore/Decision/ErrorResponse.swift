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

    /// The denial for `reason`, with `WWW-Authenticate` on 401 and `Retry-After` on 429.
    @discardableResult
    public static func appendDenial(
        _ reason: DenyReason, requestID: [UInt8], close: Bool, headOnly: Bool, retryAfter: Int = 1, extraHeaders: String = "", to out: inout [UInt8]
    ) -> Int {
        var extra = extraHeaders
        switch reason.status {
        case 401:
            extra += reason == .missing_key ? "WWW-Authenticate: Bearer realm=\"keygate\"\r\n" : "WWW-Authenticate: Bearer realm=\"keygate\", error=\"invalid_token\"\r\n"
        case 429:
            extra += "Retry-After: \(retryAfter)\r\n"
        default: break
        }
        return append(status: reason.status, error: reason.rawValue, message: reason.message, requestID: requestID, close: close, extraHeaders: extra, headOnly: headOnly, to: &out)
    }
}
