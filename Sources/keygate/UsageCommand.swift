import ArgumentParser
import FoundationEssentials
import Glibc
import KeygateCore

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Report usage from usage logs (plain or .gz).")
    @Option(name: .customLong("log"), help: "A usage log (repeatable; default: the policy's usage_log).") var logs: [String] = []
    @Option(help: "Only events since then (RFC 3339, a date, or a duration back from now like 24h).") var since: String?
    @Option(help: "Only events before then (same forms).") var until: String?
    @Option(help: "Only this key id.") var key: String?
    @Option(help: "Group by key, route, country, status or reason.") var by: String = "key"
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var options: ConfigOption

    func validate() throws {
        if UsageReport.Pivot(rawValue: by) == nil { throw ValidationError("--by must be one of key, route, country, status, reason") }
    }

    static func time(_ text: String, _ flag: String) throws -> Int64 {
        if let ms = DurationText.parseMillis(text) { return Timestamp.nowMillis() - ms }
        if let ms = Timestamp.parseMillis(text) { return ms }
        throw CLIFailure("\(flag) \"\(text)\" is not a time (RFC 3339, a date, or a duration like 24h)")
    }

    func run() throws {
        var paths = logs
        if paths.isEmpty {
            let policy = try options.policy()
            guard policy.usageLog != "-" else { throw CLIFailure("the policy logs usage to stdout; pass --log PATH") }
            paths = [policy.usageLog]
        }
        var filter = UsageReport.Filter(keyID: key)
        if let since { filter.sinceMillis = try Self.time(since, "--since") }
        if let until { filter.untilMillis = try Self.time(until, "--until") }
        var report = UsageReport(pivot: UsageReport.Pivot(rawValue: by) ?? .key, filter: filter)
        for path in paths {
            guard FileManager.default.isReadableFile(atPath: path) else { throw CLIFailure("cannot read usage log \(path)") }
            try LineReader.forEachLine(path) { report.add(line: $0, unfinished: $1) }
        }
        if json {
            printJSON(report)
        } else {
            printTable(report)
        }
        if report.malformed > 0 {
            StandardStreams.writeError("keygate: skipped \(report.malformed) malformed line(s) of \(report.lines)\n")
        }
        if report.unfinished > 0 {
            StandardStreams.writeError("keygate: left out \(report.unfinished) last line(s) still being written (no line end yet)\n")
        }
    }

    func sortedGroups(_ r: UsageReport) -> [(String, UsageReport.Group)] {
        r.groups.sorted { $0.value.requests != $1.value.requests ? $0.value.requests > $1.value.requests : $0.key < $1.key }
    }

    func printTable(_ r: UsageReport) {
        var rows: [[String]] = [[by.uppercased(), "NAME", "OWNER", "REQUESTS", "ALLOWED", "DENIED", "LAST", "IPS", "P50 MS", "P99 MS", "TOP ROUTES", "TOP COUNTRIES"]]
        for (k, g) in sortedGroups(r) {
            let denied = g.denied.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            rows.append([
                k, Output.clip(g.name ?? "-", 20), Output.clip(g.owner ?? "-", 12), String(g.requests), String(g.allowed), denied.isEmpty ? "0" : denied,
                g.lastMillis > 0 ? Output.minute(Timestamp.format(millis: g.lastMillis)) : "-", "\(g.distinctClientIPs)\(g.clientIPsCapped ? "+" : "")",
                Output.twoDecimals(g.p50), Output.twoDecimals(g.p99),
                g.topRoutes.map { "\($0.0) (\($0.1))" }.joined(separator: ", "), g.topCountries.map { "\($0.0) \($0.1)" }.joined(separator: ", "),
            ])
        }
        Output.printTable(rows)
        print("\(r.matched) events in the window, \(r.lines) lines read")
    }

    func printJSON(_ r: UsageReport) {
        var groups: [[String: Any]] = []
        for (k, g) in sortedGroups(r) {
            groups.append([
                by: k, "name": g.name as Any, "owner": g.owner as Any, "requests": g.requests, "allowed": g.allowed, "denied": g.denied,
                "last_used": g.lastMillis > 0 ? Timestamp.format(millis: g.lastMillis) : JSONValue.null, "distinct_client_ips": g.distinctClientIPs,
                "top_routes": g.topRoutes.map { ["route": $0.0, "requests": $0.1] }, "top_countries": g.topCountries.map { ["country": $0.0, "requests": $0.1] },
                "p50_ms": (g.p50 * 100).rounded() / 100, "p99_ms": (g.p99 * 100).rounded() / 100,
            ])
        }
        let doc: [String: Any] = ["by": by, "groups": groups, "events": r.matched, "lines": r.lines, "malformed": r.malformed, "unfinished": r.unfinished]
        Output.printJSON(doc)
    }
}

/// Streams a file's lines in 1 MiB reads; `.gz` files through `gzip -dc`. The second argument
/// to `body` is true for a last line the file ends without a newline.
enum LineReader {
    static func forEachLine(_ path: String, _ body: (UnsafeBufferPointer<UInt8>, Bool) -> Void) throws {
        var child: pid_t?
        let fd: Int32
        if path.hasSuffix(".gz") {
            (child, fd) = try gunzip(path)
        } else {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw CLIFailure("cannot read usage log \(path)") }
        }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var carry: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            buffer.withUnsafeBufferPointer { p in
                var start = 0
                for i in 0..<n where p[i] == 0x0A {
                    if carry.isEmpty {
                        if i > start { body(UnsafeBufferPointer(rebasing: p[start..<i]), false) }
                    } else {
                        carry.append(contentsOf: p[start..<i])
                        carry.withUnsafeBufferPointer { body($0, false) }
                        carry.removeAll(keepingCapacity: true)
                    }
                    start = i + 1
                }
                if start < n { carry.append(contentsOf: p[start..<n]) }
            }
        }
        if !carry.isEmpty { carry.withUnsafeBufferPointer { body($0, true) } }
        if let child {
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            // Exited with 0: the low seven bits (the signal) and the exit code are both zero.
            if status != 0 { throw CLIFailure("cannot decompress \(path)") }
        }
    }

    /// `gzip -dc PATH` as a child whose output is the returned descriptor.
    static func gunzip(_ path: String) throws -> (pid_t, Int32) {
        var pipeEnds: [Int32] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else { throw CLIFailure("cannot decompress \(path): no pipe") }
        // The read end stays with this process only; the write end becomes the child's output.
        _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        let argv = ["/bin/sh", "-c", "exec gzip -dc \"$0\"", path]
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, &cArgs, environ)
        close(pipeEnds[1])
        guard rc == 0 else {
            close(pipeEnds[0])
            throw CLIFailure("cannot decompress \(path): \(String(cString: strerror(rc)))")
        }
        return (pid, pipeEnds[0])
    }
}
