import ArgumentParser
import FoundationEssentials
import Glibc
import KeygateCluster
import KeygateCore
import KeygateIO

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and manage API keys.",
        subcommands: [
            KeysCreate.self, KeysList.self, KeysShow.self, KeysUpdate.self, KeysRevoke.self, KeysDisable.self, KeysEnable.self, KeysDelete.self,
            KeysRotate.self, KeysHistory.self, KeysImport.self,
        ])
}

/// Flags shared by create, update and import.
struct KeyFlags: ParsableArguments {
    @Option(help: "A name for people (\"ERP nightly sync\").") var name: String?
    @Option(help: "Who owns the key.") var owner: String?
    @Option(help: "What the key is for.") var description: String?
    @Option(name: .customLong("scope"), help: "A scope from the policy (repeatable).") var scopes: [String] = []
    @Option(name: .customLong("allow-ip"), help: "An address or CIDR the key may be used from (repeatable).") var allowIPs: [String] = []
    @Option(name: .customLong("allow-country"), help: "A country the key may be used from (repeatable).") var allowCountries: [String] = []
    @Option(name: .customLong("deny-country"), help: "A country the key may not be used from (repeatable).") var denyCountries: [String] = []
    @Option(name: .customLong("not-before"), help: "When the key becomes valid (RFC 3339, a date, or a duration from now).") var notBefore: String?
    @Option(help: "When the key expires (RFC 3339, a date, or a duration from now).") var expires: String?
    @Option(help: "Lifetime from now, like 90d.") var ttl: String?
    @Option(parsing: .unconditional, help: "Rate limit, like 100/s or 6000/m.") var rate: String?
    @Option(parsing: .unconditional, help: "Burst size for the rate limit.") var burst: Int?
    @Option(parsing: .unconditional, help: "Quota, like 100000/day or 1000000/month.") var quota: String?
    @Option(name: .customLong("client-cert"), help: "A PEM client certificate that authenticates as this key over TLS (repeatable).")
    var clientCerts: [String] = []
    @Option(help: "Who makes the change (default: the OS user).") var actor: String?

    func settings(updating: Bool) throws -> KeySettings {
        var s = KeySettings()
        if !clientCerts.isEmpty {
            s.clientCerts = try clientCerts.map { path in
                guard let f = TLSSession.fingerprint(ofCertificateFile: path), let d = KeyDigest(digest: f) else {
                    throw CLIFailure("--client-cert \(path): not a readable PEM certificate")
                }
                return d.stored
            }
        }
        s.name = name
        s.owner = owner
        s.description = description
        if !scopes.isEmpty { s.scopes = scopes }
        if !allowIPs.isEmpty { s.allowIPs = allowIPs }
        if !allowCountries.isEmpty { s.allowCountries = allowCountries }
        if !denyCountries.isEmpty { s.denyCountries = denyCountries }
        s.notBefore = notBefore
        s.expires = expires
        s.ttl = ttl
        s.rate = rate
        s.burst = burst
        s.quota = quota
        return s
    }
}

func osUser() -> String {
    if let pw = getpwuid(geteuid()), let name = pw.pointee.pw_name { return String(cString: name) }
    return ProcessInfo.processInfo.environment["USER"] ?? "unknown"
}

func manager(_ options: ConfigOption, actor: String? = nil) throws -> KeyManager {
    KeyManager(policy: try options.policy(), actor: actor ?? osUser())
}

/// A key given an expiry in the past is stored (scripts make expired keys on purpose), but
/// whoever typed it should know the key is refused from the start.
func warnIfAlreadyExpired(_ r: KeyRecord) {
    guard let e = r.expires_at, let ms = Timestamp.parseMillis(e), ms <= Timestamp.nowMillis() else { return }
    StandardStreams.writeError("keygate: warning: key \(r.id) expires_at \(e) is in the past: the gate refuses it as expired\n")
}

/// Runs a key operation, turning its refusal into a one-line CLI error.
func attempt<T>(_ body: () throws(KeyError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        throw CLIFailure(error.description)
    }
}

struct KeysCreate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a key and print it once.")
    @OptionGroup var flags: KeyFlags
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var options: ConfigOption

    func validate() throws {
        if flags.name == nil { throw ValidationError("--name is required") }
    }

    func run() throws {
        let m = try manager(options, actor: flags.actor)
        let settings = try flags.settings(updating: false)
        let (record, key) = try attempt { () throws(KeyError) in try m.create(settings) }
        warnIfAlreadyExpired(record)
        if json {
            Output.printJSON(Output.recordJSON(record, state: record.effectiveState(nowMillis: Timestamp.nowMillis()), extra: ["key": key]))
        } else {
            print("Created key \(record.id) (\(record.name))\n")
            print("  \(key)\n")
            print("Store it now: this is the only time the key is shown. keygate keeps only its SHA-256 hash.")
        }
    }
}

struct KeysList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List keys with their state.")
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options)
        let records = try attempt { () throws(KeyError) in try m.list() }
        let now = Timestamp.nowMillis()
        let lastUsed = LastUsedFile.read(for: m.policy)
        if json {
            Output.printJSON(records.map { Output.recordJSON($0, state: $0.effectiveState(nowMillis: now), extra: ["last_used": lastUsed[$0.id] as Any]) })
            return
        }
        var rows = [["ID", "NAME", "OWNER", "STATE", "CREATED", "EXPIRES", "LAST USED"]]
        for r in records {
            rows.append([
                r.id, Output.clip(r.name, 28), Output.clip(r.owner ?? "-", 16), r.effectiveState(nowMillis: now), Output.day(r.created_at),
                r.expires_at.map(Output.day) ?? "never", lastUsed[r.id].map(Output.minute) ?? "never",
            ])
        }
        Output.printTable(rows)
    }
}

struct KeysShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one key.")
    @Argument var id: String
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options)
        let r = try attempt { () throws(KeyError) in try m.find(id) }
        let state = r.effectiveState(nowMillis: Timestamp.nowMillis())
        let lastUsed = LastUsedFile.read(for: m.policy)[r.id]
        let quota = KeyObservations.quota(r, m.policy)
        if json {
            var extra: [String: Any] = ["last_used": lastUsed as Any]
            if let quota { extra["quota_used"] = quota.used; extra["quota_remaining"] = quota.remaining }
            Output.printJSON(Output.recordJSON(r, state: state, extra: extra))
            return
        }
        let lines: [(String, String?)] = [
            ("id", r.id), ("name", r.name), ("description", r.description), ("owner", r.owner), ("state", state),
            ("scopes", r.scopes.isEmpty ? "all routes" : r.scopes.joined(separator: ", ")),
            ("allow_ips", r.allow_ips.isEmpty ? "any" : r.allow_ips.joined(separator: ", ")),
            ("countries", r.countries.allow.isEmpty && r.countries.deny.isEmpty ? "any" : "allow [\(r.countries.allow.joined(separator: ","))] deny [\(r.countries.deny.joined(separator: ","))]"),
            ("not_before", r.not_before), ("expires_at", r.expires_at ?? "never"), ("rate", r.rate.map { $0 + (r.burst.map { " burst \($0)" } ?? "") }),
            ("quota", r.quota.map { q in quota.map { "\(q): \($0.used) used, \($0.remaining) remaining this period" } ?? q }),
            ("created_at", r.created_at), ("updated_at", r.updated_at), ("revoked_at", r.revoked_at),
            ("revoke_reason", r.revoke_reason), ("rotated_from", r.rotated_from), ("rotated_to", r.rotated_to), ("last_used", lastUsed ?? "never"),
        ]
        for (k, v) in lines { if let v { print("\(k.padded(to: 14)) \(Output.visible(v))") } }
    }
}

struct KeysUpdate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "update", abstract: "Change a key's settings.")
    @Argument var id: String
    @OptionGroup var flags: KeyFlags
    @Option(
        name: .customLong("clear"),
        help: "Remove a setting (repeatable): \(KeySettings.Clearable.allCases.map(\.rawValue).joined(separator: ", ")).")
    var clear: [String] = []
    @OptionGroup var options: ConfigOption

    func validate() throws {
        for c in clear where KeySettings.Clearable(rawValue: c) == nil {
            throw ValidationError("--clear \(c): not one of \(KeySettings.Clearable.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let m = try manager(options, actor: flags.actor)
        var settings = try flags.settings(updating: true)
        settings.clear = Set(clear.compactMap(KeySettings.Clearable.init))
        let r = try attempt { () throws(KeyError) in try m.update(id, settings) }
        if settings.expires != nil { warnIfAlreadyExpired(r) }
        print("Updated key \(r.id) (\(r.name))")
    }
}

struct KeysRevoke: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a key for good (the record stays for audit).")
    @Argument var id: String
    @Option(help: "Why.") var reason: String?
    @Option(help: "Who makes the change.") var actor: String?
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options, actor: actor)
        let r = try attempt { () throws(KeyError) in try m.revoke(id, reason: reason) }
        pushToFleet(m.policy, id: r.id, .revoke)
        print("Revoked key \(r.id) (\(r.name)); running gates refuse it, and close its open tunnels, within a second.")
    }
}

struct KeysDisable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Suspend a key (enable brings it back).")
    @Argument var id: String
    @Option(help: "Who makes the change.") var actor: String?
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options, actor: actor)
        let r = try attempt { () throws(KeyError) in try m.setEnabled(id, false) }
        pushToFleet(m.policy, id: r.id, .disable)
        print("Disabled key \(r.id) (\(r.name)); running gates refuse it, and close its open tunnels, within a second.")
    }
}

struct KeysEnable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Re-enable a disabled key.")
    @Argument var id: String
    @Option(help: "Who makes the change.") var actor: String?
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options, actor: actor)
        let r = try attempt { () throws(KeyError) in try m.setEnabled(id, true) }
        pushToFleet(m.policy, id: r.id, .enable)
        print("Enabled key \(r.id) (\(r.name))")
    }
}

struct KeysDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Remove a key record entirely.")
    @Argument var id: String
    @Option(help: "Who makes the change.") var actor: String?
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options, actor: actor)
        try attempt { () throws(KeyError) in try m.delete(id) }
        pushToFleet(m.policy, id: id, .delete)
        print("Deleted key \(id); running gates refuse it, and close its open tunnels, within a second.")
    }
}

struct KeysRotate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rotate", abstract: "Issue a replacement key; the old one expires after the grace period.")
    @Argument var id: String
    @Option(help: "How long the old key keeps working.") var grace = "24h"
    @Option(help: "Who makes the change.") var actor: String?
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var options: ConfigOption

    func run() throws {
        guard let graceMillis = DurationText.parseMillis(grace) else { throw CLIFailure("--grace \"\(grace)\" is not a duration (like 24h)") }
        let m = try manager(options, actor: actor)
        let (record, key, old) = try attempt { () throws(KeyError) in try m.rotate(id, graceMillis: graceMillis) }
        if json {
            Output.printJSON(Output.recordJSON(record, state: record.effectiveState(nowMillis: Timestamp.nowMillis()), extra: ["key": key]))
        } else {
            print("Rotated key \(old.id) → \(record.id) (\(record.name))\n")
            print("  \(key)\n")
            print("Store it now: this is the only time the key is shown.")
            print("The old key \(old.id) keeps working until \(old.expires_at ?? "-").")
        }
    }
}

struct KeysHistory: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "Show the audit log of key changes.")
    @Argument var id: String?
    @Flag(help: "Print JSON lines.") var json = false
    @OptionGroup var options: ConfigOption

    func run() throws {
        let m = try manager(options)
        let entries = AuditLog.read(m.auditPath).filter { id == nil || $0.key_id == id }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for e in entries { print(String(decoding: try encoder.encode(e), as: UTF8.self)) }
            return
        }
        var rows = [["TIME", "ACTOR", "ACTION", "KEY", "CHANGES"]]
        for e in entries {
            let changes = e.changes.keys.sorted().map { k -> String in
                let c = e.changes[k]!
                return "\(k): \(Output.short(c.old)) → \(Output.short(c.new))"
            }
            rows.append([Output.minute(e.ts), e.actor, e.action, e.key_id, Output.clip(changes.joined(separator: "; "), 80)])
        }
        Output.printTable(rows)
    }
}

struct KeysImport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Store existing (legacy) keys: one secret on stdin, or --from FILE with SECRET<TAB>NAME lines.")
    @OptionGroup var flags: KeyFlags
    @Option(help: "A file of SECRET<TAB>NAME lines.") var from: String?
    @Flag(help: "Print JSON: one record for a secret on stdin, an array for --from.") var json = false
    @OptionGroup var options: ConfigOption

    func validate() throws {
        if from == nil && flags.name == nil { throw ValidationError("give --name (secret on stdin) or --from FILE") }
    }

    func run() throws {
        let m = try manager(options, actor: flags.actor)
        var items: [(String, KeySettings)] = []
        if let from {
            guard let text = try? String(contentsOfFile: from, encoding: .utf8) else { throw CLIFailure("cannot read \(from)") }
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let l = line.trimmed { $0 == "\r" }
                if l.isEmpty || l.hasPrefix("#") { continue }
                let parts = l.split(separator: "\t", maxSplits: 1)
                guard parts.count == 2 else { throw CLIFailure("\(from):\(i + 1): expected SECRET<TAB>NAME") }
                var s = try flags.settings(updating: false)
                s.name = String(parts[1])
                items.append((String(parts[0]), s))
            }
        } else {
            let data = StandardStreams.readInput()
            let secret = String(decoding: data, as: UTF8.self).trimmed()
            items.append((secret, try flags.settings(updating: false)))
        }
        let records = try attempt { () throws(KeyError) in try m.importKeys(items) }
        if json {
            // Like create, without "key": the secret is the caller's and is never echoed.
            let now = Timestamp.nowMillis()
            let objects = records.map { Output.recordJSON($0, state: $0.effectiveState(nowMillis: now), extra: [:]) }
            if from == nil, let one = objects.first { Output.printJSON(one) } else { Output.printJSON(objects) }
            return
        }
        for r in records { print("Imported key \(r.id) (\(r.name))") }
    }
}
