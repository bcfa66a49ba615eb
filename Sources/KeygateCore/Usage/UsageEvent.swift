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
        out.append(#"{"ts":""# as StaticString)
        clock.append(millis: tsMillis, to: &out)
        out.append(#"","request_id":"# as StaticString)
        JSONBytes.appendString(requestID, to: &out)
        out.append(contentsOf: (allowed ? #","decision":"allow","reason":"# : #","decision":"deny","reason":"#).utf8)
        if let reason {
            JSONBytes.appendString(reason.rawValue, to: &out)
        } else {
            out.append("null" as StaticString)
        }
        out.append(#","status":"# as StaticString)
        JSONBytes.appendInt(status, to: &out)
        if let key {
            out.append(contentsOf: key.usageJSON)
        } else {
            out.append(#","key_id":null,"key_name":null,"owner":null"# as StaticString)
        }
        out.append(#","client_ip":"# as StaticString)
        if let client {
            out.append(UInt8(ascii: "\""))
            client.append(to: &out)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null" as StaticString)
        }
        out.append(#","country":"# as StaticString)
        if country != 0 {
            out.append(UInt8(ascii: "\""))
            out.append(UInt8(country >> 8))
            out.append(UInt8(country & 0xFF))
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null" as StaticString)
        }
        out.append(#","method":"# as StaticString)
        JSONBytes.appendString(method, to: &out)
        out.append(#","path":"# as StaticString)
        JSONBytes.appendString(path, to: &out)
        out.append(#","bytes_in":"# as StaticString)
        JSONBytes.appendInt(bytesIn, to: &out)
        out.append(#","bytes_out":"# as StaticString)
        JSONBytes.appendInt(bytesOut, to: &out)
        out.append(#","duration_ms":"# as StaticString)
        JSONBytes.appendMillis(micros: durationMicros, to: &out)
        out.append(#","upstream_ms":"# as StaticString)
        if let u = upstreamMicros { JSONBytes.appendMillis(micros: u, to: &out) } else { out.append("null" as StaticString) }
        if tls == 13 {
            out.append(#","tls":"1.3""# as StaticString)
        } else if tls == 12 {
            out.append(#","tls":"1.2""# as StaticString)
        }
        out.append("}\n" as StaticString)
    }
}
