import ArgumentParser
import FoundationEssentials
import Glibc
import KeygateCore
import KeygateProxy

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a demo: an echo upstream, the gate in front of it, and a demo key.")
    @Option(help: "Folder for the demo's policy, keys and logs.") var dir = "run/demo"
    @Option(help: "Port of the gate.") var port: UInt16 = 8080
    @Option(help: "Port of the demo upstream.") var upstreamPort: UInt16 = 9000
    @Option(help: "Port of the admin endpoint.") var adminPort: UInt16 = 9901
    @Option(help: "Port of the web console.") var consolePort: UInt16 = 9902

    func run() throws {
        let configDir = PathText.join(dir, "config")
        try FileManager.default.createDirectory(atPath: configDir, withIntermediateDirectories: true)
        let policyPath = PathText.join(configDir, "keygate.yaml")
        let policy = """
            # keygate demo policy: the gate on :\(port) in front of an echo service on :\(upstreamPort).
            listen: "127.0.0.1:\(port)"
            upstream: "http://127.0.0.1:\(upstreamPort)"
            admin_listen: "127.0.0.1:\(adminPort)"
            console: { listen: "127.0.0.1:\(consolePort)" }
            workers: auto
            keys_file: keys.jsonl
            usage_log: usage.jsonl
            key_prefix: kg
            credentials: { headers: [x-api-key], bearer: true }
            public_routes: ["GET /healthz"]
            scopes:
              suppliers.read: ["GET /suppliers", "GET /suppliers/*"]
              suppliers.write: ["POST /suppliers", "* /suppliers/*/notes"]

            """
        try policy.write(toFile: policyPath, atomically: true, encoding: .utf8)
        let loaded: Policy
        do {
            loaded = try PolicyLoader.load(path: policyPath)
        } catch {
            throw CLIFailure(error.problems.joined(separator: "\n"))
        }
        let manager = KeyManager(policy: loaded, actor: "demo")
        var full = KeySettings()
        full.name = "Demo key"
        full.owner = "demo"
        let (record, key) = try attempt { () throws(KeyError) in try manager.create(full) }
        var read = KeySettings()
        read.name = "Demo read-only key"
        read.owner = "demo"
        read.scopes = ["suppliers.read"]
        let (_, readKey) = try attempt { () throws(KeyError) in try manager.create(read) }
        // A console user for the demo, with a new password each run (shown below, once).
        let password = String(decoding: Base62.random(16), as: UTF8.self)
        try? ConsoleUsers.remove(loaded.consoleUsersFile, name: "demo")
        try attempt { () throws(KeyError) in try ConsoleUsers.add(loaded.consoleUsersFile, name: "demo", role: .admin, password: password) }

        let upstream = try EchoUpstream(port: upstreamPort)
        let server: Server
        do {
            server = try Server(policyPath: policyPath, log: OpsLog())
            try server.start()
        } catch {
            throw CLIFailure("\(error)")
        }
        let base = "http://127.0.0.1:\(server.listenPort)"
        let message =
            """

            keygate demo is running: gate \(base) → echo upstream http://127.0.0.1:\(upstream.port)
            Policy \(policyPath), keys \(loaded.keysFile), usage log \(loaded.usageLog)

            Try:
              curl -i \(base)/suppliers                                        # 401 missing_key
              curl -i -H 'x-api-key: \(key)' \(base)/suppliers
              curl -i -H 'Authorization: Bearer \(readKey)' \(base)/suppliers/42
              curl -i -H 'Authorization: Bearer \(readKey)' -X POST \(base)/suppliers   # 403 scope_denied
              curl -i -H 'x-api-key: kg_00000000_wrongwrongwrongwrongwrongwrong00' \(base)/  # 401 malformed_key
              curl -s http://127.0.0.1:\(adminPort)/metrics | grep keygate_requests_total
              tail -f \(loaded.usageLog)

            Streams and tunnels (the key is checked when they open and for as long as they stay open):
              curl -N -H 'x-api-key: \(key)' \(base)/events     # five server-sent events, one a second
              curl -i -N -H 'x-api-key: \(key)' -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: ZGVtby1rZXktMTIzNDU2Nw==' \(base)/ws
                # 101 and a greeting frame; revoke the key (below) and the gate closes the tunnel with code 1008

            Web console: http://127.0.0.1:\(consolePort)/   user demo, password \(password)

            Manage keys:
              keygate keys list --config \(policyPath)
              keygate keys revoke \(record.id) --config \(policyPath)       # refused, and its tunnels closed, within a second

            Ctrl-C stops the demo.

            """
        // Written straight to the descriptor: the gate keeps running, so nothing flushes later.
        StandardStreams.writeOutput(message)
        server.wait()
    }
}
