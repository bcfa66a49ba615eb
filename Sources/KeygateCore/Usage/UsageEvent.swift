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

    public init() {}

    /// Appends the JSON line (with its newline) to `out`.
    public func append(to out: inout [UInt8]) {
        out.append(contentsOf: #"{"ts":""#.utf8)
        Timestamp.append(millis: tsMillis, to: &out)
        out.append(contentsOf: #"","request_id":"#.utf8)
        JSONBytes.appendString(requestID, to: &out)
        out.append(contentsOf: (allowed ? #","decision":"allow","reason":"# : #","decision":"deny","reason":"#).utf8)
        if let reason {
            JSONBytes.appendString(reason.rawValue, to: &out)
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(contentsOf: #","status":"#.utf8)
        JSONBytes.appendInt(status, to: &out)
        if let key {
            out.append(contentsOf: #","key_id":"#.utf8)
            JSONBytes.appendString(key.record.id, to: &out)
            out.append(contentsOf: #","key_name":"#.utf8)
            JSONBytes.appendString(key.record.name, to: &out)
            out.append(contentsOf: #","owner":"#.utf8)
            if let owner = key.record.owner { JSONBytes.appendString(owner, to: &out) } else { out.append(contentsOf: "null".utf8) }
        } else {
            out.append(contentsOf: #","key_id":null,"key_name":null,"owner":null"#.utf8)
        }
        out.append(contentsOf: #","client_ip":"#.utf8)
        if let client {
            out.append(UInt8(ascii: "\""))
            client.append(to: &out)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(contentsOf: #","country":"#.utf8)
        if country != 0 {
            out.append(UInt8(ascii: "\""))
            out.append(UInt8(country >> 8))
            out.append(UInt8(country & 0xFF))
            out.append(UInt8(ascii: "\""))
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(contentsOf: #","method":"#.utf8)
        JSONBytes.appendString(method, to: &out)
        out.append(contentsOf: #","path":"#.utf8)
        JSONBytes.appendString(path, to: &out)
        out.append(contentsOf: #","bytes_in":"#.utf8)
        JSONBytes.appendInt(bytesIn, to: &out)
        out.append(contentsOf: #","bytes_out":"#.utf8)
        JSONBytes.appendInt(bytesOut, to: &out)
        out.append(contentsOf: #","duration_ms":"#.utf8)
        JSONBytes.appendMillis(micros: durationMicros, to: &out)
        out.append(contentsOf: #","upstream_ms":"#.utf8)
        if let u = upstreamMicros { JSONBytes.appendMillis(micros: u, to: &out) } else { out.append(contentsOf: "null".utf8) }
        out.append(contentsOf: "}\n".utf8)
    }
}
