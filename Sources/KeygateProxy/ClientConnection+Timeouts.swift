import KeygateCore
import KeygateHTTP
import KeygateIO

/// Deadlines, checked on every loop tick: the head, the body (idle, total, minimum rate), a
/// client that reads nothing, an idle keep-alive connection or tunnel, the upstream's answer.
extension ClientConnection {
    func checkDeadline(_ now: Int64) {
        guard phase != .closed else { return }
        defer { settle() }
        if !out.isEmpty && phase != .lingering && now - lastWriteProgress >= timeouts.send {
            // A client that takes nothing of its answer: both sides close, and the exchange is
            // logged with the status it was being sent.
            ctx.metrics.timeouts[TimeoutKind.allCases.firstIndex(of: .send)!] += 1
            ex?.tunnel?.ended(.send)
            Sys.resetOnClose(fd)
            abort()
            return
        }
        if phase == .tunnel, let exchange = ex {
            checkTunnelKey(exchange)
            if phase != .tunnel { return }
        }
        if phase == .body, let exchange = ex, let kind = bodyTooSlow(exchange, now) {
            ctx.metrics.timeouts[TimeoutKind.allCases.firstIndex(of: kind)!] += 1
            if !exchange.relay.headDone && out.isEmpty {
                answerError(status: 408, message: kind == .body_total ? "the request body did not arrive in time" : "the request body arrives too slowly")
            } else {
                abort()
            }
            return
        }
        guard deadline > 0, now >= deadline else { return }
        switch phase {
        case .head:
            if inbuf.isEmpty {
                ctx.metrics.timeouts[TimeoutKind.allCases.firstIndex(of: .idle)!] += 1
                abort()  // idle keep-alive (or a connection that never sent anything)
            } else {
                ctx.metrics.timeouts[TimeoutKind.allCases.firstIndex(of: .header)!] += 1
                protocolError(HTTPParseError(408, "the request head did not arrive in time"))
            }
        case .body:
            if let exchange = ex, !exchange.relay.headDone, out.isEmpty {
                answerError(status: 408, message: "the request body did not arrive in time")
            } else {
                abort()
            }
        case .waiting:
            if let exchange = ex, !exchange.relay.headDone {
                let connecting = exchange.upstream?.connecting ?? false
                answerUpstreamFailure(connecting ? .upstream_unavailable : .upstream_timeout)
            } else {
                abort()
            }
        case .tunnel:
            ex?.tunnel?.ended(.idle)
            abort()  // no bytes either way for timeouts.tunnel_idle
        case .lingering, .closed:
            abort()
        }
    }

    /// A body that missed `timeouts.body_total`, or that averages under `limits.min_body_rate`
    /// after its grace period. Not judged while keygate itself stopped reading (the upstream
    /// could not take more).
    private func bodyTooSlow(_ exchange: Exchange, _ now: Int64) -> TimeoutKind? {
        guard !readPaused, exchange.bodyStartMillis > 0 else { return nil }
        let elapsed = now - exchange.bodyStartMillis
        if elapsed >= timeouts.bodyTotal { return .body_total }
        let minRate = Int64(ctx.snapshot.policy.limits.minBodyRate)
        if minRate > 0 && elapsed >= Policy.Timeouts.minBodyRateGraceMillis && Int64(exchange.requestBody.wireBytes) * 1000 < minRate * elapsed {
            return .body_rate
        }
        return nil
    }
}
