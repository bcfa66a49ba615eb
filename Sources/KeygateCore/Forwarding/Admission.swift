import KeygateHTTP

/// The admission phase: everything that decides, for a parsed request head, whether it goes
/// upstream or what keygate answers itself. The policy decision (`Gate.decide`) is pure; the
/// one side effect here is taking from the key's rate and quota, and marking it used.
public enum Admission {
    public enum Verdict: Equatable {
        /// Parsed, but not forwardable (HTTP.md): answered with this status and closed.
        case refuse(status: Int, message: String)
        /// Refused by the policy or the key's limits.
        case deny(DenyReason, retryAfter: Int, headers: String)
        /// Forward it; `rateHeaders` go into the client's answer.
        case forward(rateHeaders: [UInt8])
    }

    public static func admit(_ head: RequestHead, decision d: inout Decision, snapshot s: Snapshot, nowNanos: Int64, wallMillis: Int64) -> Verdict {
        if let why = UpstreamHead.refusal(head, snapshot: s) { return .refuse(status: 400, message: why) }
        let maxBody = s.policy.limits.maxBodyBytes
        if maxBody > 0, case .contentLength(let n) = head.framing, n > maxBody {
            return .refuse(status: 413, message: "the request body is larger than \(maxBody) bytes")
        }
        if let reason = d.denial { return .deny(reason, retryAfter: 1, headers: "") }
        var rateHeaders: [UInt8] = []
        let mode = s.fleet.mode
        if mode == .downDeny && !d.isPublic && d.key != nil {
            // Shared limits and revocations cannot be enforced: refuse rather than guess.
            d.denial = .cluster_unavailable
            return .deny(.cluster_unavailable, retryAfter: 1, headers: "Retry-After: 1\r\n")
        }
        if !d.isPublic, let limiter = d.key?.limiter {
            let terms = limiter.terms(mode)
            let limit = terms.limit > 0 ? terms.limit : (terms.quota ?? 0)
            switch limiter.take(nowNanos: nowNanos, wallSeconds: wallMillis / 1000, mode: mode) {
            case .allowed(let remaining, let reset):
                rateHeaders = Array("RateLimit-Limit: \(limit)\r\nRateLimit-Remaining: \(remaining)\r\nRateLimit-Reset: \(reset)\r\n".utf8)
            case .rateLimited(let retry):
                d.denial = .rate_limited
                return .deny(.rate_limited, retryAfter: retry, headers: "RateLimit-Limit: \(limit)\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: \(retry)\r\n")
            case .quotaExceeded(let retry):
                d.denial = .quota_exceeded
                return .deny(.quota_exceeded, retryAfter: retry, headers: "RateLimit-Limit: \(limit)\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: \(retry)\r\n")
            }
        }
        d.key?.markUsed(wallMillis / 1000)
        return .forward(rateHeaders: rateHeaders)
    }
}
