import KeygateCore
import KeygateHTTP

/// The answers keygate gives itself: denials, upstream failures, malformed requests. Each is
/// recorded like any other exchange.
extension ClientConnection {
    func answerDenial(_ reason: DenyReason, retryAfter: Int = 1, extraHeaders: String = "") {
        guard let exchange = ex else { return }
        exchange.status = reason.status
        // A refused request's body is never read: close so it cannot pass for the next request.
        let close = exchange.head.framing != .none || !exchange.head.keepAlive || ctx.draining
        finishOwnAnswer(exchange, close: close, bodyUnread: exchange.head.framing != .none) { bytes in
            ErrorResponse.appendDenial(
                reason, requestID: exchange.requestID, close: close, headOnly: exchange.head.isHead, retryAfter: retryAfter,
                extraHeaders: extraHeaders, to: &bytes)
        }
    }

    func answerUpstreamFailure(_ reason: DenyReason) {
        guard let exchange = ex else { return }
        dropUpstream(exchange)
        exchange.status = reason.status
        exchange.failure = reason
        let close = !exchange.bodyDone || !exchange.head.keepAlive || ctx.draining
        finishOwnAnswer(exchange, close: close, bodyUnread: !exchange.bodyDone) { bytes in
            ErrorResponse.appendDenial(reason, requestID: exchange.requestID, close: close, headOnly: exchange.head.isHead, to: &bytes)
        }
    }

    /// A request that parsed but cannot be served (400, 408, 413): answered and closed.
    func answerError(status: Int, message: String) {
        guard let exchange = ex else { return }
        dropUpstream(exchange)
        exchange.status = status
        exchange.failure = .bad_request
        finishOwnAnswer(exchange, close: true, bodyUnread: !exchange.bodyDone) { bytes in
            ErrorResponse.append(
                status: status, error: DenyReason.bad_request.rawValue, message: message, requestID: exchange.requestID, close: true, to: &bytes)
        }
    }

    /// Sends an answer of keygate's own, which `write` puts into a buffer of the loop's and
    /// returns the body size of; then records the exchange and goes on (or closes).
    private func finishOwnAnswer(_ exchange: Exchange, close: Bool, bodyUnread: Bool, _ write: (inout [UInt8]) -> Int) {
        var bytes = ctx.takeBuffer()
        exchange.ownAnswerBytes = UInt64(write(&bytes))
        sendToClient(bytes)
        ctx.giveBack(bytes)
        record(exchange)
        ex = nil
        if close {
            closeAfterFlush(linger: bodyUnread || !inbuf.isEmpty)
        } else {
            nextRequest()
        }
    }

    /// A request that did not parse: answer (unless it cannot read one) and close.
    func protocolError(_ error: HTTPParseError) {
        guard error.status != 0 else {
            abort()
            return
        }
        var bytes: [UInt8] = []
        var requestID: [UInt8] = []
        ctx.appendRequestID(to: &requestID)
        ErrorResponse.append(status: error.status, error: "bad_request", message: error.reason, requestID: requestID, close: true, to: &bytes)
        sendToClient(bytes)
        var e = UsageEvent()
        e.tsMillis = Timestamp.nowMillis()
        e.requestID = requestID
        e.reason = .bad_request
        e.status = error.status
        e.client = peer
        e.bytesIn = UInt64(inbuf.count)
        if let t = tls, t.handshakeDone { e.tls = t.version }
        ctx.record(e)
        inbuf = []
        closeAfterFlush(linger: true)
    }
}
