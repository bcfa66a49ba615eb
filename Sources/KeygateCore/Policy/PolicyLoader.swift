import FoundationEssentials
import Glibc

/// Every problem found in a policy file, each as `file:line: message`.
public struct PolicyError: Error, CustomStringConvertible, Sendable {
    public let problems: [String]
    public var description: String { problems.joined(separator: "\n") }
}

/// Loads and validates the policy file. Validation collects every problem with its line; nothing
/// is returned unless all of it passes.
public enum PolicyLoader {
    public static func load(path: String) throws(PolicyError) -> Policy {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        guard let data = FileManager.default.contents(atPath: absolute), let text = String(data: data, encoding: .utf8) else {
            throw PolicyError(problems: ["\(path): cannot read the policy file"])
        }
        return try parse(text, file: absolute, displayName: path)
    }

    public static func parse(_ text: String, file: String, displayName: String? = nil) throws(PolicyError) -> Policy {
        let name = displayName ?? file
        let root: YAMLNode?
        do {
            root = try YAMLDocument.compose(text)
        } catch {
            throw PolicyError(problems: ["\(name):\(error.line): \(error.problem)"])
        }
        var v = Validator(name: name, dir: PathText.directory(of: file))
        let policy = v.build(root)
        if !v.problems.isEmpty { throw PolicyError(problems: v.problems) }
        return policy
    }
}

/// Walks the YAML tree, building a `Policy` and recording each problem with its line.
struct Validator {
    let name: String
    let dir: String
    var problems: [String] = []

    init(name: String, dir: String) {
        self.name = name
        self.dir = dir
    }

    mutating func fail(_ node: YAMLNode?, _ message: String) {
        problems.append("\(name):\(node?.line ?? 1): \(message)")
    }

    func resolve(_ path: String) -> String {
        path.hasPrefix("/") ? path : PathText.join(dir, path)
    }

    /// Iterates a mapping's pairs, refusing unknown keys.
    mutating func fields(_ node: YAMLNode, _ where_: String, known: [String], _ body: (inout Validator, String, YAMLNode) -> Void) {
        guard case .mapping(let m) = node.content else {
            fail(node, "\(where_) must be a mapping")
            return
        }
        for (k, value) in m {
            guard let key = k.text else {
                fail(k, "\(where_): keys must be plain names")
                continue
            }
            let path = where_.isEmpty ? key : "\(where_).\(key)"
            if !known.contains(key) {
                fail(k, "unknown field \"\(path)\"")
                continue
            }
            body(&self, key, value)
        }
    }

    mutating func string(_ node: YAMLNode, _ path: String) -> String? {
        guard case .scalar(let s) = node.content else {
            fail(node, "\(path) must be a string")
            return nil
        }
        return s
    }

    mutating func strings(_ node: YAMLNode, _ path: String) -> [(String, YAMLNode)] {
        guard case .sequence(let seq) = node.content else {
            fail(node, "\(path) must be a list")
            return []
        }
        var out: [(String, YAMLNode)] = []
        for (i, item) in seq.enumerated() {
            if let s = string(item, "\(path)[\(i)]") { out.append((s, item)) }
        }
        return out
    }

    mutating func bool(_ node: YAMLNode, _ path: String) -> Bool? {
        switch node.text?.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(node, "\(path) must be true or false")
            return nil
        }
    }

    mutating func int(_ node: YAMLNode, _ path: String, min: Int = 0, max: Int) -> Int? {
        guard let s = node.text, let v = Int(s.replacing("_", with: "")), v >= min, v <= max else {
            fail(node, "\(path) must be a whole number from \(min) to \(max)")
            return nil
        }
        return v
    }

    mutating func duration(_ node: YAMLNode, _ path: String) -> Int64? {
        guard let s = node.text, let ms = DurationText.parseMillis(s), ms > 0, ms <= Bounds.timeoutMillis else {
            fail(node, "\(path): \"\(node.text ?? "")\" is not a duration of at most 7d (like 500ms, 10s, 2m, 1h)")
            return nil
        }
        return ms
    }

    mutating func endpoint(_ node: YAMLNode, _ path: String) -> Policy.Endpoint? {
        guard let s = string(node, path) else { return nil }
        guard let e = Self.parseEndpoint(s) else {
            fail(node, "\(path): \"\(s)\" is not host:port")
            return nil
        }
        return e
    }

    /// `names`: a DNS name may stand for the address (resolved when the gate starts).
    static func parseEndpoint(_ s: String, names: Bool = false) -> Policy.Endpoint? {
        var host: Substring
        var port: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            port = rest.dropFirst()
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            port = s[s.index(after: colon)...]
        }
        guard !host.isEmpty, let p = UInt16(port), p > 0 else { return nil }
        if host == "localhost" { host = "127.0.0.1" }
        let isName = names && host.utf8.allSatisfy { Base62.isDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") } && host.contains(where: \.isLetter)
        guard isName || IPAddress(String(host)) != nil else { return nil }
        return Policy.Endpoint(host: String(host), port: p)
    }

    mutating func cidrs(_ node: YAMLNode, _ path: String) -> [CIDR] {
        var out: [CIDR] = []
        for (i, (s, item)) in strings(node, path).enumerated() {
            if let c = CIDR(s) { out.append(c) } else { fail(item, "\(path)[\(i)]: \"\(s)\" is not a CIDR") }
        }
        return out
    }

    mutating func countryList(_ node: YAMLNode, _ path: String) -> Set<String> {
        var out = Set<String>()
        for (i, (s, item)) in strings(node, path).enumerated() {
            if CountryCode.isValid(s) { out.insert(s.uppercased()) } else { fail(item, "\(path)[\(i)]: \"\(s)\" is not an ISO 3166-1 alpha-2 country code") }
        }
        return out
    }

    mutating func routes(_ node: YAMLNode, _ path: String) -> [RoutePattern] {
        var out: [RoutePattern] = []
        for (i, (s, item)) in strings(node, path).enumerated() {
            do {
                out.append(try RoutePattern(s))
            } catch {
                fail(item, "\(path)[\(i)]: \(error.message)")
            }
        }
        return out
    }

    mutating func build(_ root: YAMLNode?) -> Policy {
        var p = Policy(file: "", keysFile: resolve("keys.jsonl"), usageLog: resolve("usage.jsonl"))
        guard let root else {
            fail(nil, "the policy file is empty")
            return p
        }
        var countriesNode: YAMLNode? = nil
        var upstreamHTTPS = false
        var upstreamTLSNode: YAMLNode? = nil
        var consoleNode: YAMLNode? = nil
        var upstreamCA: String? = nil
        var upstreamServerName: String? = nil
        var upstreamVerify = true
        let known = [
            "listen", "upstream", "admin_listen", "workers", "keys_file", "usage_log", "geoip_db", "key_prefix", "credentials",
            "trusted_proxies", "access", "public_routes", "scopes", "limits", "timeouts", "identity_headers", "paths", "tls", "upstream_tls", "state_dir", "cluster", "console",
        ]
        fields(root, "", known: known) { v, key, node in
            switch key {
            case "listen": if let e = v.endpoint(node, key) { p.listen = e }
            case "upstream":
                guard let s = v.string(node, key) else { return }
                let https = s.hasPrefix("https://")
                guard https || s.hasPrefix("http://"),
                    let e = Validator.parseEndpoint(String(s.dropFirst(https ? 8 : 7)).trimmed { $0 == "/" }, names: true)
                else {
                    v.fail(node, "upstream: \"\(s)\" must be http://host:port or https://host:port")
                    return
                }
                p.upstream = e
                upstreamHTTPS = https
            case "admin_listen":
                if node.text == "" || node.text == "off" { p.adminListen = nil } else if let e = v.endpoint(node, key) { p.adminListen = e }
            case "workers":
                if node.text == "auto" { p.workers = 0 } else if let n = v.int(node, key, min: 1, max: 256) {
                    p.workers = n
                }
            case "keys_file": if let s = v.string(node, key) { p.keysFile = v.resolve(s) }
            case "usage_log": if let s = v.string(node, key) { p.usageLog = s == "-" ? "-" : v.resolve(s) }
            case "geoip_db":
                if let s = v.string(node, key), !s.isEmpty {
                    let path = v.resolve(s)
                    if !FileManager.default.isReadableFile(atPath: path) { v.fail(node, "geoip_db: cannot read \(path)") }
                    p.geoipDB = path
                }
            case "key_prefix":
                if let s = v.string(node, key) {
                    if s.isEmpty || s.count > 16 || !s.utf8.allSatisfy({ Base62.isDigit($0) }) {
                        v.fail(node, "key_prefix: 1 to 16 letters or digits")
                    } else {
                        p.keyPrefix = s
                    }
                }
            case "credentials":
                v.fields(node, key, known: ["headers", "bearer", "query"]) { v, k, n in
                    if k == "query" {
                        let names = v.strings(n, "credentials.query").map { $0.0 }
                        for name in names where name.isEmpty || !name.utf8.allSatisfy({ Base62.isDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }) {
                            v.fail(n, "credentials.query: \"\(name)\" is not a plain parameter name")
                        }
                        p.credentialQuery = names
                    } else if k == "headers" {
                        let names = v.strings(n, "credentials.headers").map { $0.0.lowercased() }
                        for name in names where name.isEmpty || !name.utf8.allSatisfy({ Base62.isDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }) {
                            v.fail(n, "credentials.headers: \"\(name)\" is not a header name")
                        }
                        p.credentialHeaders = names
                    } else if let b = v.bool(n, "credentials.bearer") {
                        p.bearer = b
                    }
                }
            case "trusted_proxies": p.trustedProxies = v.cidrs(node, key)
            case "access":
                v.fields(node, key, known: ["allow_ips", "countries"]) { v, k, n in
                    if k == "allow_ips" {
                        p.access.allowIPs = v.cidrs(n, "access.allow_ips")
                    } else {
                        countriesNode = n
                        v.fields(n, "access.countries", known: ["allow", "deny", "unknown"]) { v, ck, cn in
                            switch ck {
                            case "allow": p.access.countries.allow = v.countryList(cn, "access.countries.allow")
                            case "deny": p.access.countries.deny = v.countryList(cn, "access.countries.deny")
                            default:
                                switch cn.text {
                                case "allow": p.access.countries.unknownAllowed = true
                                case "deny": p.access.countries.unknownAllowed = false
                                default: v.fail(cn, "access.countries.unknown must be allow or deny")
                                }
                            }
                        }
                    }
                }
            case "public_routes": p.publicRoutes = v.routes(node, key)
            case "state_dir":
                if let dir = v.string(node, key) {
                    let full = v.resolve(dir)
                    var info = stat()
                    if stat(full, &info) != 0 || info.st_mode & S_IFMT != S_IFDIR {
                        v.fail(node, "state_dir: \(full) is not a folder")
                    } else if access(full, W_OK) != 0 {
                        v.fail(node, "state_dir: \(full) is not writable")
                    }
                    p.stateDirectory = full
                }
            case "console":
                var c = Policy.Console(usersFile: v.resolve("console-users.jsonl"))
                v.fields(node, key, known: ["listen", "users_file", "session_ttl", "tls"]) { v, k, n in
                    switch k {
                    case "listen": if let e = v.endpoint(n, "console.listen") { c.listen = e }
                    case "tls": if let b = v.bool(n, "console.tls") { c.tls = b }
                    case "users_file": if let s = v.string(n, "console.users_file") { c.usersFile = v.resolve(s) }
                    default:
                        if let ms = v.duration(n, "console.session_ttl") {
                            if ms < 1000 { v.fail(n, "console.session_ttl must be at least 1s") } else { c.sessionTTLMillis = ms }
                        }
                    }
                }
                p.console = c
                consoleNode = node
            case "cluster":
                var redis: RedisAddress?
                var namedRedis = false
                var c = Policy.Cluster(redis: RedisAddress("redis://127.0.0.1")!)
                v.fields(node, key, known: ["redis", "sync_interval", "on_redis_down"]) { v, k, n in
                    switch k {
                    case "redis":
                        namedRedis = true
                        guard let url = v.string(n, "cluster.redis") else { return }
                        if let r = RedisAddress(url) { redis = r } else { v.fail(n, "cluster.redis: \"\(url)\" is not redis://[password@]host[:port][/db]") }
                    case "sync_interval":
                        guard let ms = v.duration(n, "cluster.sync_interval") else { return }
                        if ms < 10 || ms > 10_000 { v.fail(n, "cluster.sync_interval must be from 10ms to 10s") } else { c.syncIntervalMillis = ms }
                    default:
                        switch v.string(n, "cluster.on_redis_down") {
                        case "local": c.denyWhenDown = false
                        case "deny": c.denyWhenDown = true
                        case nil: break
                        default: v.fail(n, "cluster.on_redis_down must be local or deny")
                        }
                    }
                }
                if let redis {
                    c.redis = redis
                    p.cluster = c
                } else if case .mapping = node.content, !namedRedis {
                    v.fail(node, "cluster needs redis (redis://host:port/db)")
                }
            case "upstream_tls":
                upstreamTLSNode = node
                v.fields(node, key, known: ["ca", "server_name", "verify"]) { v, k, n in
                    switch k {
                    case "ca":
                        if let path = v.string(n, "upstream_tls.ca") {
                            let full = v.resolve(path)
                            if !FileManager.default.isReadableFile(atPath: full) { v.fail(n, "upstream_tls.ca: cannot read \(full)") }
                            upstreamCA = full
                        }
                    case "server_name":
                        if let name = v.string(n, "upstream_tls.server_name"), !name.isEmpty { upstreamServerName = name }
                    default:
                        if let b = v.bool(n, "upstream_tls.verify") { upstreamVerify = b }
                    }
                }
            case "tls":
                var t = Policy.TLS()
                v.fields(node, key, known: ["certificates", "min_version", "client_certificates"]) { v, k, n in
                    switch k {
                    case "certificates":
                        guard case .sequence(let items) = n.content, !items.isEmpty else {
                            v.fail(n, "tls.certificates must be a list of {cert, key}")
                            return
                        }
                        for (i, item) in items.enumerated() {
                            var pair = Policy.TLS.Pair(cert: "", key: "")
                            v.fields(item, "tls.certificates[\(i)]", known: ["cert", "key"]) { v, ck, cn in
                                guard let path = v.string(cn, "tls.certificates[\(i)].\(ck)") else { return }
                                let full = v.resolve(path)
                                if !FileManager.default.isReadableFile(atPath: full) { v.fail(cn, "tls.certificates[\(i)].\(ck): cannot read \(full)") }
                                if ck == "cert" { pair.cert = full } else { pair.key = full }
                            }
                            if pair.cert.isEmpty || pair.key.isEmpty {
                                v.fail(item, "tls.certificates[\(i)] needs both cert and key")
                            }
                            t.certificates.append(pair)
                        }
                    case "min_version":
                        switch n.text {
                        case "1.2": t.minTLS13 = false
                        case "1.3": t.minTLS13 = true
                        default: v.fail(n, "tls.min_version must be \"1.2\" or \"1.3\"")
                        }
                    default:
                        v.fields(n, "tls.client_certificates", known: ["ca", "mode"]) { v, ck, cn in
                            guard let value = v.string(cn, "tls.client_certificates.\(ck)") else { return }
                            if ck == "mode" {
                                if ["off", "optional", "require"].contains(value) {
                                    t.clientCertificateMode = value
                                } else {
                                    v.fail(cn, "tls.client_certificates.mode must be off, optional or require")
                                }
                            } else {
                                let full = v.resolve(value)
                                if !FileManager.default.isReadableFile(atPath: full) { v.fail(cn, "tls.client_certificates.ca: cannot read \(full)") }
                                t.clientCA = full
                            }
                        }
                        if t.clientCertificateMode != "off" && t.clientCA == nil {
                            v.fail(n, "tls.client_certificates: mode \(t.clientCertificateMode) needs ca")
                        }
                    }
                }
                if t.certificates.isEmpty { v.fail(node, "tls needs at least one entry in certificates") }
                p.tls = t
            case "paths":
                v.fields(node, key, known: ["escaped_slashes"]) { v, _, n in
                    guard let s = v.string(n, "paths.escaped_slashes") else { return }
                    if let mode = PathNormalizer.EscapedSlashes(rawValue: s) {
                        p.escapedSlashes = mode
                    } else {
                        v.fail(n, "paths.escaped_slashes must be reject, unescape_and_forward or keep")
                    }
                }
            case "scopes":
                guard case .mapping(let m) = node.content else {
                    v.fail(node, "scopes must be a mapping of scope name to routes")
                    return
                }
                for (k, n) in m {
                    guard let scope = k.text, !scope.isEmpty else {
                        v.fail(k, "scopes: names must be plain strings")
                        continue
                    }
                    p.scopes[scope] = v.routes(n, "scopes.\(scope)")
                }
            case "limits":
                v.fields(
                    node, key,
                    known: ["max_header_bytes", "max_headers", "max_body_bytes", "max_connections", "max_connections_per_ip", "max_requests_per_connection", "default_rate", "default_burst", "replicas", "min_body_rate", "request_buffer"]
                ) { v, k, n in
                    let path = "limits.\(k)"
                    switch k {
                    case "default_rate":
                        if let s = v.string(n, path) {
                            if RateText.parse(s) == nil { v.fail(n, "\(path): \"\(s)\" is not a rate (like 100/s, 6000/m)") } else { p.limits.defaultRate = s }
                        }
                    case "default_burst": if let x = v.int(n, path, min: 1, max: Bounds.burst) { p.limits.defaultBurst = x }
                    case "replicas": if let x = v.int(n, path, min: 1, max: Bounds.replicas) { p.limits.replicas = x }
                    case "min_body_rate": if let x = v.int(n, path, min: 0, max: Bounds.bodyRate) { p.limits.minBodyRate = x }
                    case "request_buffer": if let x = v.int(n, path, min: 0, max: Bounds.requestBuffer) { p.limits.requestBuffer = x }
                    case "max_header_bytes": if let x = v.int(n, path, min: 1024, max: Bounds.headerBytes) { p.limits.maxHeaderBytes = x }
                    case "max_headers": if let x = v.int(n, path, min: 1, max: Bounds.headers) { p.limits.maxHeaders = x }
                    case "max_body_bytes": if let x = v.int(n, path, max: Bounds.bodyBytes) { p.limits.maxBodyBytes = UInt64(x) }
                    case "max_connections": if let x = v.int(n, path, min: 1, max: Bounds.connections) { p.limits.maxConnections = x }
                    case "max_connections_per_ip": if let x = v.int(n, path, min: 0, max: Bounds.connections) { p.limits.maxConnectionsPerIP = x }
                    default: if let x = v.int(n, path, min: 1, max: Bounds.requestsPerConnection) { p.limits.maxRequestsPerConnection = x }
                    }
                }
            case "timeouts":
                v.fields(node, key, known: ["header_read", "idle", "body_idle", "body_total", "send", "tunnel_idle", "upstream_connect", "upstream_response", "shutdown_grace"]) { v, k, n in
                    guard let ms = v.duration(n, "timeouts.\(k)") else { return }
                    switch k {
                    case "header_read": p.timeouts.headerRead = ms
                    case "idle": p.timeouts.idle = ms
                    case "body_idle": p.timeouts.bodyIdle = ms
                    case "body_total": p.timeouts.bodyTotal = ms
                    case "send": p.timeouts.send = ms
                    case "tunnel_idle": p.timeouts.tunnelIdle = ms
                    case "upstream_connect": p.timeouts.upstreamConnect = ms
                    case "upstream_response": p.timeouts.upstreamResponse = ms
                    default: p.timeouts.shutdownGrace = ms
                    }
                }
            case "identity_headers":
                v.fields(node, key, known: ["prefix"]) { v, _, n in
                    if let s = v.string(n, "identity_headers.prefix") {
                        if s.count < 2 || !s.utf8.allSatisfy({ Base62.isDigit($0) || $0 == UInt8(ascii: "-") }) {
                            v.fail(n, "identity_headers.prefix: letters, digits and - only")
                        } else {
                            p.identityPrefix = s
                        }
                    }
                }
            default: break
            }
        }
        if let c = p.console, c.listen.port == p.listen.port || c.listen.port == p.adminListen?.port {
            fail(consoleNode, "console.listen must be a port of its own, not the proxy's or the admin endpoint's")
        }
        if let c = p.console, c.tls, p.tls == nil {
            fail(consoleNode, "console.tls uses the certificates of the tls block, which is missing")
        }
        if upstreamHTTPS {
            p.upstreamTLS = Policy.UpstreamTLS(ca: upstreamCA, serverName: upstreamServerName ?? p.upstream.host, verify: upstreamVerify)
        } else if upstreamTLSNode != nil {
            fail(upstreamTLSNode, "upstream_tls needs an https:// upstream")
        }
        let overlap = p.access.countries.allow.intersection(p.access.countries.deny)
        if !overlap.isEmpty {
            fail(countriesNode, "access.countries: \(overlap.sorted().joined(separator: ", ")) both allowed and denied")
        }
        let usesCountries = !p.access.countries.allow.isEmpty || !p.access.countries.deny.isEmpty || !p.access.countries.unknownAllowed
        if usesCountries && p.geoipDB == nil {
            fail(countriesNode, "access.countries needs geoip_db")
        }
        return p
    }
}

/// ISO 3166-1 alpha-2 codes as GeoIP databases report them.
public enum CountryCode {
    static let assigned: Set<String> = Set(
        """
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
        CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
        GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO \
        JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR \
        MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO \
        RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV \
        TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW EU AP XK
        """.split(separator: " ").map(String.init))

    public static func isValid(_ code: String) -> Bool { assigned.contains(code.uppercased()) && code.count == 2 }
}
