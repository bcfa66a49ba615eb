/// Why a request was not forwarded (or failed upstream): the `reason` of the usage event and
/// the `error` of the JSON answer.
public enum DenyReason: String, Sendable, CaseIterable {
    case missing_key, malformed_key, unknown_key, revoked, disabled, expired, not_yet_valid
    case ip_not_allowed, country_not_allowed, scope_denied
    case rate_limited, quota_exceeded
    case bad_request, upstream_unavailable, upstream_timeout
    /// `cluster.on_redis_down: deny` while Redis is unreachable.
    case cluster_unavailable

    /// Position in `allCases`, for tables indexed by reason.
    public var index: Int {
        switch self {
        case .missing_key: return 0
        case .malformed_key: return 1
        case .unknown_key: return 2
        case .revoked: return 3
        case .disabled: return 4
        case .expired: return 5
        case .not_yet_valid: return 6
        case .ip_not_allowed: return 7
        case .country_not_allowed: return 8
        case .scope_denied: return 9
        case .rate_limited: return 10
        case .quota_exceeded: return 11
        case .bad_request: return 12
        case .upstream_unavailable: return 13
        case .upstream_timeout: return 14
        case .cluster_unavailable: return 15
        }
    }

    public var status: Int {
        switch self {
        case .missing_key, .malformed_key, .unknown_key, .revoked, .disabled, .expired, .not_yet_valid: return 401
        case .ip_not_allowed, .country_not_allowed, .scope_denied: return 403
        case .rate_limited, .quota_exceeded: return 429
        case .bad_request: return 400
        case .upstream_unavailable: return 502
        case .upstream_timeout: return 504
        case .cluster_unavailable: return 503
        }
    }

    public var message: String {
        switch self {
        case .missing_key: return "an API key is required: send it in the x-api-key header or as Authorization: Bearer"
        case .malformed_key: return "the API key is malformed (check for a typo or truncation)"
        case .unknown_key: return "the API key is not valid"
        case .revoked: return "the API key has been revoked"
        case .disabled: return "the API key is disabled"
        case .expired: return "the API key has expired"
        case .not_yet_valid: return "the API key is not valid yet"
        case .ip_not_allowed: return "requests from this address are not allowed"
        case .country_not_allowed: return "requests from this country are not allowed"
        case .scope_denied: return "the API key may not call this route"
        case .rate_limited: return "too many requests for this API key"
        case .quota_exceeded: return "the API key's request quota is used up"
        case .bad_request: return "the request is malformed"
        case .upstream_unavailable: return "the upstream service is unavailable"
        case .upstream_timeout: return "the upstream service did not answer in time"
        case .cluster_unavailable: return "keys cannot be checked while the gate's fleet store is unreachable; retry shortly"
        }
    }
}
