import ArgumentParser
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateIO

struct Keygate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygate",
        abstract: "An API-key gate in front of an HTTP service.",
        subcommands: [Serve.self, Check.self, Keys.self, ConsoleUsersCommand.self, Usage.self, GeoIP.self, Demo.self])
}

/// A refusal the CLI reports in one line with exit code 1.
struct CLIFailure: Error {
    let message: String
    init(_ m: String) { message = m }
    init(_ e: Error) { message = "\(e)" }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "The policy file (default ./config/keygate.yaml, then /etc/keygate/keygate.yaml).")
    var config: String?

    func path() throws -> String {
        if let config { return config }
        for candidate in ["config/keygate.yaml", "/etc/keygate/keygate.yaml"] where FileManager.default.fileExists(atPath: candidate) {
            return candidate
        }
        throw CLIFailure("no policy file: pass --config PATH (looked for ./config/keygate.yaml and /etc/keygate/keygate.yaml)")
    }

    func policy() throws -> Policy {
        let p = try path()
        do {
            return try PolicyLoader.load(path: p)
        } catch {
            throw CLIFailure(error.problems.joined(separator: "\n"))
        }
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gate.")
    @OptionGroup var options: ConfigOption

    func run() throws {
        let log = OpsLogFactory.make()
        let server: Server
        do {
            server = try Server(policyPath: try options.path(), log: log)
            try server.start()
        } catch let e as CLIFailure {
            throw e
        } catch {
            throw CLIFailure("\(error)")
        }
        server.wait()
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate the policy, key store and GeoIP database the way serve loads them.")
    @OptionGroup var options: ConfigOption

    func run() throws {
        let path = try options.path()
        let snapshot: Snapshot
        do {
            snapshot = try SnapshotLoader.load(policyPath: path)
        } catch {
            throw CLIFailure("\(error)")
        }
        let p = snapshot.policy
        var certificates: [TLSServerContext.Certificate] = []
        if let t = p.tls {
            do {
                certificates = try Server.buildTLS(t).certificates
            } catch {
                throw CLIFailure("tls: \(error)")
            }
        }
        print("\(path): ok")
        print("  listen \(p.listen) → upstream http://\(p.upstream), \(p.workerCount) loops")
        print("  \(snapshot.keyCount) keys in \(p.keysFile)")
        print("  usage log \(p.usageLog)")
        if let c = p.cluster {
            print("  cluster \(c.redis), sync every \(c.syncIntervalMillis) ms, on_redis_down \(c.denyWhenDown ? "deny" : "local")")
        }
        if let geo = snapshot.geoip { print("  GeoIP \(geo.path) (\(geo.databaseType))") }
        for c in certificates { print("  TLS certificate \(c.name), valid until \(Timestamp.format(seconds: c.notAfter))") }
    }
}

struct GeoIP: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "geoip", abstract: "Show the country the gate sees for an address.")
    @Argument var ip: String
    @Option(help: "A MaxMind DB (default: the policy's geoip_db).") var db: String?
    @OptionGroup var options: ConfigOption

    func run() throws {
        guard let address = IPAddress(ip) else { throw CLIFailure("\"\(ip)\" is not an IP address") }
        let path: String
        if let db {
            path = db
        } else {
            guard let p = try options.policy().geoipDB else { throw CLIFailure("the policy sets no geoip_db; pass --db PATH") }
            path = p
        }
        let database: GeoIPDatabase
        do {
            database = try GeoIPDatabase(path: path)
        } catch {
            throw CLIFailure("\(error)")
        }
        let c = database.country(address)
        print("\(address) \(c == 0 ? "unknown" : CountryCode.unpack(c))")
    }
}

import KeygateProxy

enum OpsLogFactory {
    static func make() -> OpsLog { OpsLog() }
}
