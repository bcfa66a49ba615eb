import KeygateHTTP

/// One usage event: what happened to one request. Encoded as one JSON line of the usage log.
public struct UsageEvent {
    public var tsMillis: Int64 = 0
    public var requestID: [UInt8] = []
    /// Whether the policy let the request through (an upstream failure keeps it "allow").
    public var allowed = false
    public var reason: DenyReason? = nil
    public var status = 0
    public var key: KeyEntry? = nil
    public var client: IPAddress? = nil
    public var country: UInt16 = 0
    public var method: ArraySlice<UInt8> = []
    public var path: ArraySlice<UInt8> = []
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    public var durationMicros: Int64 = 0
    /// nil when the request never reached the upstream.
    public var upstreamMicros: Int64? = nil
    /// 12 or 13 for a request over TLS 1.2 or 1.3; 0 for plain HTTP.
    public var tls: Int = 0

    public init() {}

    /// Appends the JSON line (with its newline) to `out`.
    public func append(to out: inout [UInt8]) {
        var clock = Timestamp.SecondCache()
        append(to: &out, clock: &clock)
    }

    /// As above, with the loop's timestamp cache.
    public func append(to out: inout [UInt8], clock: inout Timestamp.SecondCache) {
        write(to: &out, clock: &clock)
    }

    /// Into a loop's raw batch buffer: the hot path.
    public func append(to out: ByteBuffer, clock: inout Timestamp.SecondCache) {
        var sink = out
        write(to: &sink, clock: &clock)
    }

    func write<S: ByteSink>(to out: inout S, clock: inout Timestamp.SecondCache) {
        out.appendLiteral(#"{"ts":""#)
        clock.append(millis: tsMillis, to: &out)
        out.appendLiteral(#"","request_id":"#)
        JSONBytes.appendString(requestID, to: &out)
        if allowed { out.appendLiteral(#","decision":"allow","reason":"#) } else { out.appendLiteral(#","decision":"deny","reason":"#) }
        if let reason {
            JSONBytes.appendString(reason.rawValue.utf8, to: &out)
        } else {
            out.appendLiteral("null")
        }
        out.appendLiteral(#","status":"#)
        JSONBytes.appendInt(status, to: &out)
        if let key {
            out.appendBytes(key.usageJSON)
        } else {
            out.appendLiteral(#","key_id":null,"key_name":null,"owner":null"#)
        }
        out.appendLiteral(#","client_ip":"#)
        if let client {
            out.append(UInt8(ascii: "\""))
            client.append(to: &out)
            out.append(UInt8(ascii: "\""))
        } else {
            out.appendLiteral("null")
        }
        out.appendLiteral(#","country":"#)
        if country != 0 {
            out.append(UInt8(ascii: "\""))
            CountryCode.append(country, to: &out)
            out.append(UInt8(ascii: "\""))
        } else {
            out.appendLiteral("null")
        }
        out.appendLiteral(#","method":"#)
        JSONBytes.appendString(method, to: &out)
        out.appendLiteral(#","path":"#)
        JSONBytes.appendString(path, to: &out)
        out.appendLiteral(#","bytes_in":"#)
        JSONBytes.appendInt(bytesIn, to: &out)
        out.appendLiteral(#","bytes_out":"#)
        JSONBytes.appendInt(bytesOut, to: &out)
        out.appendLiteral(#","duration_ms":"#)
        JSONBytes.appendMillis(micros: durationMicros, to: &out)
        out.appendLiteral(#","upstream_ms":"#)
        if let u = upstreamMicros { JSONBytes.appendMillis(micros: u, to: &out) } else { out.appendLiteral("null") }
        if tls == 13 {
            out.appendLiteral(#","tls":"1.3""#)
        } else if tls == 12 {
            out.appendLiteral(#","tls":"1.2""#)
        }
        out.appendLiteral("}\n")
    }
}
