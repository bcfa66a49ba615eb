import FoundationEssentials
import Glibc

/// The validated policy file: plain values with defaults, built only by `PolicyLoader`.
public struct Policy: Sendable {
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        public let host: String
        public let port: UInt16
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public struct Countries: Sendable {
        public var allow: Set<String> = []
        public var deny: Set<String> = []
        /// What to do with addresses that have no country in the database.
        public var unknownAllowed = true
    }

    public struct Access: Sendable {
        public var allowIPs: [CIDR] = []
        public var countries = Countries()
    }

    public struct Limits: Sendable {
        public var maxHeaderBytes = 32768
        public var maxHeaders = 100
        /// 0 = no limit.
        public var maxBodyBytes: UInt64 = 0
        public var maxConnections = 10000
        /// Connections one client address may hold at once; 0 = no per-address cap.
        public var maxConnectionsPerIP = 0
        public var maxRequestsPerConnection = 1000
        /// Rate for keys without their own (`100/s`); nil = unlimited.
        public var defaultRate: String?
        public var defaultBurst: Int?
        /// Gates serving the same keys: each enforces rate / replicas and quota / replicas.
        public var replicas = 1
        /// Bytes per second a request body must average once it has had `minBodyRateGraceMillis`;
        /// 0 = no minimum.
        public var minBodyRate = 1024
        /// A body up to this size is read whole before the upstream is contacted; 0 = off.
        public var requestBuffer = 65536

        public init() {}
    }

    /// All in milliseconds.
    public struct Timeouts: Sendable {
        /// The minimum body rate is judged only after this much of a body's time.
        public static let minBodyRateGraceMillis: Int64 = 5_000

        public var headerRead: Int64 = 10_000
        public var idle: Int64 = 60_000
        public var bodyIdle: Int64 = 10_000
        public var upstreamConnect: Int64 = 2_000
        public var upstreamResponse: Int64 = 30_000
        public var shutdownGrace: Int64 = 30_000
        /// A WebSocket tunnel with no bytes either way for this long is closed.
        public var tunnelIdle: Int64 = 3_600_000
        /// The whole request body must arrive within it, however it trickles.
        public var bodyTotal: Int64 = 60_000
        /// A client that takes no bytes of its answer for this long is closed.
        public var send: Int64 = 60_000
    }

    /// TLS on `listen` (`tls:`); nil = plain HTTP.
    public struct TLS: Sendable, Equatable {
        public struct Pair: Sendable, Equatable {
            public var cert: String
            public var key: String
        }
        /// The first is the default; the others are chosen by SNI from their names.
        public var certificates: [Pair] = []
        public var minTLS13 = false
        /// `off`, `optional` or `require`; with a CA file unless off.
        public var clientCertificateMode = "off"
        public var clientCA: String?
    }

    /// The policy file, absolute; every other path is relative to its folder.
    public var file: String
    public var listen = Endpoint(host: "0.0.0.0", port: 8080)
    public var upstream = Endpoint(host: "127.0.0.1", port: 9000)
    public var adminListen: Endpoint? = Endpoint(host: "127.0.0.1", port: 9901)
    /// 0 = one per core.
    public var workers = 0
    public var keysFile: String
    /// A path, or "-" for standard output.
    public var usageLog: String
    public var geoipDB: String?
    public var keyPrefix = "kg"
    /// Lower-case header names that may carry the key.
    public var credentialHeaders = ["x-api-key"]
    public var bearer = true
    /// Query parameters that may carry the key (for browsers' WebSockets, which cannot set
    /// headers); removed before forwarding and never logged.
    public var credentialQuery: [String] = []
    public var trustedProxies: [CIDR] = []
    public var access = Access()
    public var publicRoutes: [RoutePattern] = []
    /// `%2F` and `%5C` in a path: refused (400) by default, since the upstream may decode them
    /// into separators that the route rules never saw.
    public var escapedSlashes = PathNormalizer.EscapedSlashes.reject
    public var scopes: [String: [RoutePattern]] = [:]
    public var limits = Limits()
    public var timeouts = Timeouts()
    public var identityPrefix = "X-Keygate-"
    public var tls: TLS?
    /// Where the gate writes what it learns (last use, quota counts); nil = beside the store.
    public var stateDirectory: String?
    public var stateDir: String { stateDirectory ?? PathText.directory(of: keysFile) }
    /// TLS to the upstream (`upstream: https://…`); nil = plain HTTP.
    public var upstreamTLS: UpstreamTLS?
    /// Limits, quotas, last use and revocations shared with other gates through Redis; nil =
    /// this gate alone.
    public var cluster: Cluster?

    /// The web console (`console:`); nil = none.
    public var console: Console?

    public struct Console: Sendable, Equatable {
        public var listen = Endpoint(host: "127.0.0.1", port: 9902)
        public var usersFile: String
        public var sessionTTLMillis: Int64 = 12 * 3_600_000
        /// Serve the console over TLS with the certificates of `tls`.
        public var tls = false
    }

    /// The console users file: the policy's, or `console-users.jsonl` beside the policy.
    public var consoleUsersFile: String {
        console?.usersFile ?? PathText.join(PathText.directory(of: file), "console-users.jsonl")
    }

    public struct Cluster: Sendable, Equatable {
        public var redis: RedisAddress
        public var syncIntervalMillis: Int64 = 100
        /// While Redis is unreachable: false = each gate enforces alone (limits divided by
        /// `limits.replicas`), true = keyed requests are answered 503.
        public var denyWhenDown = false
    }

    public struct UpstreamTLS: Sendable, Equatable {
        /// PEM CA bundle; nil = the system's store.
        public var ca: String?
        /// Sent as SNI and checked against the certificate; default: the upstream's host.
        public var serverName: String
        public var verify = true
    }

    public init(file: String, keysFile: String, usageLog: String) {
        self.file = file
        self.keysFile = keysFile
        self.usageLog = usageLog
    }

    public var workerCount: Int {
        if workers > 0 { return workers }
        return max(1, System.coreCount)
    }
}
