import KeygateCore
import KeygateHTTP

/// One request in flight on a client connection: its head, its decision, how far each body
/// has got, and the figures its usage event will carry.
final class Exchange {
    let head: RequestHead
    var decision: Decision
    let requestID: [UInt8]
    let startMicros: Int64
    let startWallMillis: Int64
    var upstream: UpstreamConnection?

    // Request body, client → upstream.
    var bodyRemaining: UInt64 = 0
    var bodyDecoder: ChunkedDecoder?
    var bodyDone = false
    var bytesIn: UInt64

    /// A copy of everything sent upstream while it is small, so a request that met a stale
    /// pooled connection can be sent again on a fresh one.
    var replay: [UInt8]?
    var retried = false

    // Response, upstream → client.
    var responseScanner = HeadScanner(maxHeadBytes: 65536, maxLineBytes: 65536, maxRequestLineBytes: 65536)
    var upstreamInput: [UInt8] = []
    var responseHeadDone = false
    var responseFraming: BodyFraming = .none
    var responseRemaining: UInt64 = 0
    var responseDecoder: ChunkedDecoder?
    var chunkToClient = false
    var upstreamKeepAlive = false
    var upstreamReusable = true
    var status = 0
    var bytesOut: UInt64 = 0
    var upstreamStartMicros: Int64 = 0
    var keepClient = true
    var recorded = false
    /// `RateLimit-*` fields for the client's answer, when the key is limited.
    var rateHeaders: [UInt8] = []

    init(head: RequestHead, decision: Decision, requestID: [UInt8], startMicros: Int64, startWallMillis: Int64, headBytes: Int) {
        self.head = head
        self.decision = decision
        self.requestID = requestID
        self.startMicros = startMicros
        self.startWallMillis = startWallMillis
        self.bytesIn = UInt64(headBytes)
    }

    /// Whether sending the request again cannot do harm (RFC 9110 §9.2.2).
    var idempotent: Bool {
        let b = head.bytes
        let m = head.method
        return b.equalsLowercased(m, "get") || b.equalsLowercased(m, "head") || b.equalsLowercased(m, "options")
            || b.equalsLowercased(m, "put") || b.equalsLowercased(m, "delete") || b.equalsLowercased(m, "trace")
    }

    func usageEvent(endMicros: Int64) -> UsageEvent {
        var e = UsageEvent()
        e.tsMillis = startWallMillis
        e.requestID = requestID
        e.allowed = decision.allowed
        e.reason = decision.denial
        e.status = status
        e.key = decision.key
        e.client = decision.client
        e.country = decision.country
        e.method = head.bytes[head.method]
        e.path = head.bytes[head.path]
        e.bytesIn = bytesIn
        e.bytesOut = bytesOut
        e.durationMicros = endMicros - startMicros
        if upstreamStartMicros > 0 { e.upstreamMicros = endMicros - upstreamStartMicros }
        return e
    }
}
