import KeygateCore
import KeygateHTTP

/// One request in flight on a client connection: its head, its decision, the state of each
/// direction's body, and the figures its usage event will carry.
final class Exchange {
    let head: RequestHead
    let decision: Decision
    let requestID: [UInt8]
    let startMicros: Int64
    let startWallMillis: Int64
    let headBytes: Int
    var upstream: UpstreamConnection?

    /// Request body, client → upstream.
    var requestBody: BodyReframer
    var bodyDone: Bool { requestBody.isDone }
    /// A copy of everything sent upstream while it is small, so a request that met a stale
    /// pooled connection can be sent again on a fresh one.
    var replay: [UInt8]?
    var retried = false
    /// Loop time the body started (`timeouts.body_total`, `limits.min_body_rate`).
    var bodyStartMillis: Int64 = 0
    /// The head and body read so far, while the body is buffered before the upstream is
    /// contacted (`limits.request_buffer`); nil once the bytes went upstream.
    /// Counted, while it exists, in the loop's `requestBufferBytes`.
    var buffered: [UInt8]?

    /// Response, upstream → client.
    var relay: ResponseRelay
    /// Whether the upstream connection may serve another request after this one.
    var upstreamReusable = true
    var status = 0
    /// Bytes of keygate's own answer, when it gave one.
    var ownAnswerBytes: UInt64?
    var upstreamStartMicros: Int64 = 0
    var keepClient = true
    var recorded = false
    /// `RateLimit-*` fields for the client's answer, when the key is limited.
    var rateHeaders: [UInt8] = []
    /// A WebSocket handshake the gate let through; after a 101 the exchange is a tunnel.
    var isUpgrade = false
    var tunnel: TunnelState?
    /// Why a request the policy allowed still failed (upstream trouble, a body error): the
    /// usage event's reason.
    var failure: DenyReason?

    init(head: RequestHead, decision: Decision, requestID: [UInt8], startMicros: Int64, startWallMillis: Int64, headBytes: Int) {
        self.head = head
        self.decision = decision
        self.requestID = requestID
        self.startMicros = startMicros
        self.startWallMillis = startWallMillis
        self.headBytes = headBytes
        // keygate frames what it forwards itself: a length as a length, chunks as its own chunks.
        requestBody = BodyReframer(head.framing, chunkOutput: head.framing == .chunked)
        relay = ResponseRelay(requestWasHead: head.isHead)
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
        // A request refused for its own faults (malformed, too large, too slow) is a denial;
        // one the upstream failed stays allowed.
        e.allowed = decision.allowed && failure != .bad_request
        e.reason = failure ?? decision.denial
        e.status = status
        e.key = decision.key
        e.client = decision.client
        e.country = decision.country
        e.method = head.bytes[head.method]
        e.path = head.bytes[head.path]
        e.bytesIn = UInt64(headBytes) + requestBody.wireBytes
        e.bytesOut = ownAnswerBytes ?? relay.bytesOut
        e.durationMicros = endMicros - startMicros
        if let t = tunnel {
            // One event per tunnel, at its close: the bytes and time of the whole tunnel.
            e.bytesIn = t.bytesIn
            e.bytesOut = t.bytesOut
            e.durationMicros = endMicros - t.startMicros
        }
        if upstreamStartMicros > 0 { e.upstreamMicros = endMicros - upstreamStartMicros }
        return e
    }
}

/// What a WebSocket tunnel keeps: its figures, where the stream to the client is between
/// frames, and the key it is enforced for.
/// A class, so the per-message updates change it in place.
final class TunnelState {
    let startMicros: Int64
    /// `timeouts.tunnel_idle` when the tunnel opened (read once, not per message).
    let idleMillis: Int64
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    var toClient = WebSocketFrames()
    /// The snapshot the key was last checked against.
    var checked: Snapshot
    var key: KeyEntry?
    /// What is ending the tunnel, once something is: set once, by the first cause.
    private(set) var end: TunnelEnd?

    init(startMicros: Int64, idleMillis: Int64, checked: Snapshot, key: KeyEntry?) {
        self.startMicros = startMicros
        self.idleMillis = idleMillis
        self.checked = checked
        self.key = key
    }

    func ended(_ cause: TunnelEnd) {
        if end == nil { end = cause }
    }
}
