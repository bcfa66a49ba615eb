import FoundationEssentials
import Glibc
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
        var requests: [(String, any CustomStringConvertible)] = [("decision=\"allow\",reason=\"\"", m.requests[m.requests.count - 1])]
        for (i, r) in DenyReason.allCases.enumerated() {
            let decision = (r == .upstream_unavailable || r == .upstream_timeout) ? "allow" : "deny"
            requests.append(("decision=\"\(decision)\",reason=\"\(r.rawValue)\"", m.requests[i]))
        }
        s += family("keygate_requests_total", "counter", "Requests by decision and reason.", requests)
        s += family("keygate_responses_total", "counter", "Responses by status class.", (1...5).map { ("class=\"\($0)xx\"", m.statusClasses[$0]) })
        s += histogram("keygate_request_duration_seconds", "Time from the first byte in to the last byte out.", m.durationBuckets, m.durationSum)
        s += histogram("keygate_upstream_duration_seconds", "Time from sending upstream to the last byte of the answer.", m.upstreamBuckets, m.upstreamSum)
        s += family("keygate_connections_open", "gauge", "Open client connections.", [("", clients.reduce(0, +))])
        s += family(
            "keygate_loop_connections_open", "gauge", "Open client connections by event loop (new ones go to the loop with the fewest).",
            clients.enumerated().map { ("loop=\"\($0)\"", $1) })
        s += family("keygate_upstream_connections_open", "gauge", "Open upstream connections.", [("", m.upstreamOpen)])
        s += family(
            "keygate_timeouts_total", "counter", "Clients given up on, by what they were too slow at.",
            TimeoutKind.allCases.enumerated().map { ("kind=\"\($1.rawValue)\"", m.timeouts[$0]) })
        s += family("keygate_request_buffer_bytes", "gauge", "Request bodies held in memory before the upstream is contacted.", [("", m.requestBufferBytes)])
        s += family(
            "keygate_request_buffer_full_total", "counter", "Bodies streamed unbuffered because a loop's buffer bound was reached.", [("", m.requestBufferFull)])
        s += family("keygate_upstream_connections_in_use", "gauge", "Upstream connections carrying a request (not idle in the pool).", [("", m.upstreamInUse)])
        s += family("keygate_tunnels_open", "gauge", "Open WebSocket tunnels.", [("", m.tunnelsOpen)])
        s += family(
            "keygate_tunnels_closed_total", "counter", "WebSocket tunnels closed, by what ended them.",
            TunnelEnd.allCases.map { ("cause=\"\($0.rawValue)\"", m.tunnelsClosed[$0.index]) })
        if server.snapshot.policy.tls != nil {
            s += family(
                "keygate_tls_handshakes_total", "counter", "TLS handshakes by result.", [("result=\"ok\"", m.tlsHandshakes[0]), ("result=\"failed\"", m.tlsHandshakes[1])])
            s += family(
                "keygate_tls_certificate_expiry_timestamp_seconds", "gauge", "When each certificate in use expires.",
                server.tlsCertificates.withLock({ $0 }).map { ("name=\"\(labelValue($0.name))\"", $0.notAfter) })
            s += family("keygate_tls_reloads_total", "counter", "Certificate reloads by result.", results(server.tlsReloads))
        }
        if let fleet = server.fleetSync {
            s += family(
                "keygate_cluster_up", "gauge", "Whether this gate reaches the fleet's Redis (1) or enforces alone or refuses (0).",
                [("", fleet.up.load(ordering: .relaxed))])
            let (buckets, micros) = fleet.syncTimes.withLock { ($0.buckets, $0.micros) }
            s += histogram("keygate_cluster_sync_seconds", "Round trips that pushed this gate's counts and pulled the fleet's.", buckets, Double(micros) / 1e6)
            s += family(
                "keygate_cluster_sync_failures_total", "counter", "Syncs that failed (the counts go with the next one).",
                [("", fleet.syncFailures.load(ordering: .relaxed))])
        }
        s += family("keygate_keys_loaded", "gauge", "Keys in the live snapshot.", [("", snapshot.keyCount)])
        s += family("keygate_reloads_total", "counter", "Reloads of keys, policy and GeoIP.", results(server.reloads))
        s += family("keygate_usage_events_written_total", "counter", "Usage events written.", [("", server.usageLog.written.load(ordering: .relaxed))])
        s += family(
            "keygate_usage_events_dropped_total", "counter", "Usage events dropped because the log could not keep up.",
            [("", server.usageLog.dropped.load(ordering: .relaxed))])
        if let geo = snapshot.geoip {
            let age = max(0, Timestamp.nowSeconds() - Int64(geo.buildEpoch))
            s += family("keygate_geoip_database_age_seconds", "gauge", "Age of the GeoIP database build.", [("", age)])
        }
        return s
    }

    /// One family: its HELP and TYPE lines, then one sample per label set ("" = no labels).
    static func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, any CustomStringConvertible)]) -> String {
        var s = "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples { s += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n" }
        return s
    }

    /// A label value as the text format writes it: backslash, double quote and line feed
    /// escaped, so a certificate's name cannot break the exposition.
    static func labelValue(_ v: String) -> String {
        v.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }

    static func results(_ r: Reloads) -> [(String, any CustomStringConvertible)] {
        [("result=\"ok\"", r.ok.load(ordering: .relaxed)), ("result=\"failed\"", r.failed.load(ordering: .relaxed))]
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
