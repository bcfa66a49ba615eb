import KeygateCore
import KeygateHTTP

/// libFuzzer entries for what keygate reads from files other people write: key-store lines,
/// usage-log lines, the policy file, the key-state file and the usage rollups; and for the
/// forwarding headers a trusted proxy passes on. `KEYGATE_FUZZ_TARGET` (record, usage, policy,
/// state, rollups or forwarded) picks one. Any crash or sanitizer report is a bug: every input
/// must end in a value or an error.
nonisolated(unsafe) var fuzzTarget = "record"

/// Every address is a trusted proxy, so every chain is read to its end.
let trustingSnapshot: Snapshot = {
    let yaml = "upstream: \"http://127.0.0.1:9\"\ntrusted_proxies: [\"0.0.0.0/0\", \"::/0\"]\n"
    let policy = try! PolicyLoader.parse(yaml, file: "/nonexistent/keygate-fuzz/keygate.yaml", displayName: "keygate.yaml")
    return Snapshot(policy: policy, records: [], geoip: nil)
}()

/// The input's first line as an X-Forwarded-For value, the rest as a Forwarded value; and the
/// whole input as an address. An address that parses must print and parse back to itself.
func fuzzForwarded(_ bytes: UnsafeBufferPointer<UInt8>) {
    let raw = UnsafeRawBufferPointer(bytes)
    if let a = IPAddress(bytes: raw), IPAddress(a.description) != a { fatalError("address does not survive text: \(a)") }
    let cut = bytes.firstIndex(of: 0x0A) ?? bytes.count
    var text = Array("GET / HTTP/1.1\r\nHost: fuzz\r\nX-Forwarded-For: ".utf8)
    text += bytes[0..<cut].filter { $0 != 0x0D && $0 != 0x0A }
    text += Array("\r\nForwarded: ".utf8)
    if cut < bytes.count { text += bytes[(cut + 1)...].filter { $0 != 0x0D && $0 != 0x0A } }
    text += Array("\r\n\r\n".utf8)
    guard let head = try? text.withUnsafeBytes({ try RequestParser.parse($0) }) else { return }
    _ = Gate.decide(head, peer: IPAddress(v4: 0x0A00_0001), snapshot: trustingSnapshot, nowMillis: 0)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFiles(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    switch fuzzTarget {
    case "usage":
        var report = UsageReport(pivot: .route, filter: UsageReport.Filter(keyID: size % 3 == 0 ? "k" : nil))
        TextLines.forEach(bytes) { _, r in
            report.add(line: UnsafeBufferPointer(rebasing: bytes[r]))
            return true
        }
        for g in report.groups.values {
            _ = g.p50 + g.p99
            _ = g.topRoutes
        }
    case "forwarded":
        fuzzForwarded(bytes)
    case "state":
        // A state file that parses must write out and read back to the same state.
        if let state = KeyStateFile.parse(bytes) {
            let merged = KeyStateFile.combine(state, with: state)
            let text = KeyStateFile.render(merged)
            if KeyStateFile.parse(text) != merged { fatalError("state does not survive render/parse: \(String(decoding: text, as: UTF8.self))") }
        }
    case "rollups":
        // What the console reads back from `keys.rollups.json`: every window of every key sums
        // without trapping, and what parses writes out and reads back to the same text.
        let rollups = UsageRollups(parsing: bytes)
        let now = Int64(size) * 3_600_000
        for id in rollups.keyIDs {
            for (hourly, count) in [(true, 24), (true, 48), (false, 7), (false, 30)] {
                var total = RollupCell()
                for (_, cell) in rollups.series(id, hourly: hourly, count: count, nowMillis: now) { total.add(cell) }
            }
        }
        _ = rollups.last24Hours(nowMillis: now)
        if let text = rollups.render(), UsageRollups(parsing: text).render() != text {
            fatalError("rollups do not survive render/parse: \(String(decoding: text, as: UTF8.self))")
        }
        rollups.prune(nowMillis: now)
    case "policy":
        let text = String(decoding: bytes, as: UTF8.self)
        if let policy = try? PolicyLoader.parse(text, file: "/nonexistent/keygate-fuzz/keygate.yaml", displayName: "keygate.yaml") {
            _ = Snapshot(policy: policy, records: [], geoip: nil)
        }
    default:
        TextLines.forEach(bytes) { _, r in
            let line = UnsafeBufferPointer(rebasing: bytes[r])
            if let record = try? KeyRecordCodec.decode(line) {
                // What decodes must encode, decode again to the same record, and build an entry.
                var out: [UInt8] = []
                KeyRecordCodec.encode(record, to: &out)
                let again = out.withUnsafeBufferPointer { try? KeyRecordCodec.decode(UnsafeBufferPointer(rebasing: $0[0..<($0.count - 1)])) }
                if again != record { fatalError("record does not survive encode/decode") }
                _ = KeyEntry(record: record, scopes: [:])
                _ = record.effectiveState(nowMillis: Timestamp.nowMillis())
            }
            _ = try? KeyRecordCodec.peekIDAndHash(line)
            return true
        }
    }
    return 0
}

#if KEYGATE_FUZZ
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("KeygateFuzzFiles_main")
func keygateFuzzFilesMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    if let t = getenv("KEYGATE_FUZZ_TARGET") { fuzzTarget = String(cString: t) }
    var count = argc
    var args = argv
    return runFuzzerDriver(&count, &args) { fuzzFiles($0, $1) }
}
#else
@_cdecl("KeygateFuzzFiles_main")
func keygateFuzzFilesMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    print("KeygateFuzzFiles: build it with `make fuzz` (-sanitize=fuzzer,address)")
    return 2
}
#endif

#if canImport(Glibc)
import Glibc
#endif
