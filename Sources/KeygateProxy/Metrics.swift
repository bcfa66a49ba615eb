import Foundation
import KeygateCore

/// Prometheus text exposition of the gate's counters.
enum Metrics {
    static let bucketBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    static func bucket(_ seconds: Double) -> Int {
        var i = 0
        while i < bucketBounds.count && seconds > bucketBounds[i] { i += 1 }
        return i
    }

    static func render(server: Server) -> String {
        let (m, clients) = server.gatherMetrics()
        let snapshot = server.snapshot
        var s = ""
        s += "# HELP keygate_requests_total Requests by decision and reason.\n# TYPE keygate_requests_total counter\n"
        s += "keygate_requests_total{decision=\"allow\",reason=\"\"} \(m.requests[m.requests.count - 1])\n"
        for (i, r) in DenyReason.allCases.enumerated() {
            let decision = (r == .upstream_unavailable || r == .upstream_timeout) ? "allow" : "deny"
            s += "keygate_requests_total{decision=\"\(decision)\",reason=\"\(r.rawValue)\"} \(m.requests[i])\n"
        }
        s += "# HELP keygate_responses_total Responses by status class.\n# TYPE keygate_responses_total counter\n"
        for c in 1...5 { s += "keygate_responses_total{class=\"\(c)xx\"} \(m.statusClasses[c])\n" }
        s += histogram("keygate_request_duration_seconds", "Time from the first byte in to the last byte out.", m.durationBuckets, m.durationSum)
        s += histogram("keygate_upstream_duration_seconds", "Time from sending upstream to the last byte of the answer.", m.upstreamBuckets, m.upstreamSum)
        s += "# HELP keygate_connections_open Open client connections.\n# TYPE keygate_connections_open gauge\nkeygate_connections_open \(clients)\n"
        s += "# HELP keygate_upstream_connections_open Open upstream connections.\n# TYPE keygate_upstream_connections_open gauge\nkeygate_upstream_connections_open \(m.upstreamOpen)\n"
        s += "# HELP keygate_timeouts_total Clients given up on, by what they were too slow at.\n# TYPE keygate_timeouts_total counter\n"
        for (i, k) in TimeoutKind.allCases.enumerated() { s += "keygate_timeouts_total{kind=\"\(k.rawValue)\"} \(m.timeouts[i])\n" }
        s += "# HELP keygate_request_buffer_bytes Request bodies held in memory before the upstream is contacted.\n# TYPE keygate_request_buffer_bytes gauge\n"
        s += "keygate_request_buffer_bytes \(m.requestBufferBytes)\n"
        s += "# HELP keygate_request_buffer_full_total Bodies streamed unbuffered because a loop's buffer bound was reached.\n# TYPE keygate_request_buffer_full_total counter\n"
        s += "keygate_request_buffer_full_total \(m.requestBufferFull)\n"
        s += "# HELP keygate_upstream_connections_in_use Upstream connections carrying a request (not idle in the pool).\n# TYPE keygate_upstream_connections_in_use gauge\nkeygate_upstream_connections_in_use \(m.upstreamInUse)\n"
        s += "# HELP keygate_tunnels_open Open WebSocket tunnels.\n# TYPE keygate_tunnels_open gauge\nkeygate_tunnels_open \(m.tunnelsOpen)\n"
        if server.snapshot.policy.tls != nil {
            s += "# HELP keygate_tls_handshakes_total TLS handshakes by result.\n# TYPE keygate_tls_handshakes_total counter\n"
            s += "keygate_tls_handshakes_total{result=\"ok\"} \(m.tlsHandshakes[0])\nkeygate_tls_handshakes_total{result=\"failed\"} \(m.tlsHandshakes[1])\n"
            s += "# HELP keygate_tls_certificate_expiry_timestamp_seconds When each certificate in use expires.\n# TYPE keygate_tls_certificate_expiry_timestamp_seconds gauge\n"
            for c in server.tlsCertificates.withLock({ $0 }) {
                s += "keygate_tls_certificate_expiry_timestamp_seconds{name=\"\(c.name.replacingOccurrences(of: "\"", with: ""))\"} \(c.notAfter)\n"
            }
            s += "# HELP keygate_tls_reloads_total Certificate reloads by result.\n# TYPE keygate_tls_reloads_total counter\n"
            s += "keygate_tls_reloads_total{result=\"ok\"} \(server.tlsReloads.ok.load(ordering: .relaxed))\n"
            s += "keygate_tls_reloads_total{result=\"failed\"} \(server.tlsReloads.failed.load(ordering: .relaxed))\n"
        }
        if let fleet = server.fleetSync {
            s += "# HELP keygate_cluster_up Whether this gate reaches the fleet's Redis (1) or enforces alone or refuses (0).\n# TYPE keygate_cluster_up gauge\n"
            s += "keygate_cluster_up \(fleet.up.load(ordering: .relaxed))\n"
            let (buckets, micros) = fleet.syncTimes.withLock { ($0.buckets, $0.micros) }
            s += histogram("keygate_cluster_sync_seconds", "Round trips that pushed this gate's counts and pulled the fleet's.", buckets, Double(micros) / 1e6)
            s += "# HELP keygate_cluster_sync_failures_total Syncs that failed (the counts go with the next one).\n# TYPE keygate_cluster_sync_failures_total counter\n"
            s += "keygate_cluster_sync_failures_total \(fleet.syncFailures.load(ordering: .relaxed))\n"
        }
        s += "# HELP keygate_keys_loaded Keys in the live snapshot.\n# TYPE keygate_keys_loaded gauge\nkeygate_keys_loaded \(snapshot.keyCount)\n"
        s += "# HELP keygate_reloads_total Reloads of keys, policy and GeoIP.\n# TYPE keygate_reloads_total counter\n"
        s += "keygate_reloads_total{result=\"ok\"} \(server.reloads.ok.load(ordering: .relaxed))\n"
        s += "keygate_reloads_total{result=\"failed\"} \(server.reloads.failed.load(ordering: .relaxed))\n"
        s += "# HELP keygate_usage_events_written_total Usage events written.\n# TYPE keygate_usage_events_written_total counter\n"
        s += "keygate_usage_events_written_total \(server.usageLog.written.load(ordering: .relaxed))\n"
        s += "# HELP keygate_usage_events_dropped_total Usage events dropped because the log could not keep up.\n# TYPE keygate_usage_events_dropped_total counter\n"
        s += "keygate_usage_events_dropped_total \(server.usageLog.dropped.load(ordering: .relaxed))\n"
        if let geo = snapshot.geoip {
            let age = max(0, Timestamp.nowSeconds() - Int64(geo.buildEpoch))
            s += "# HELP keygate_geoip_database_age_seconds Age of the GeoIP database build.\n# TYPE keygate_geoip_database_age_seconds gauge\n"
            s += "keygate_geoip_database_age_seconds \(age)\n"
        }
        return s
    }

    static func histogram(_ name: String, _ help: String, _ buckets: [Int], _ sum: Double) -> String {
        var s = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative = 0
        for (i, bound) in bucketBounds.enumerated() {
            cumulative += buckets[i]
            s += "\(name)_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative += buckets[bucketBounds.count]
        s += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n\(name)_sum \(sum)\n\(name)_count \(cumulative)\n"
        return s
    }
}
