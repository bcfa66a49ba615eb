import KeygateCore

/// libFuzzer entries for what keygate reads from files other people write: key-store lines,
/// usage-log lines and the policy file. `KEYGATE_FUZZ_TARGET` (record, usage or policy) picks
/// one. Any crash or sanitizer report is a bug: every input must end in a value or an error.
nonisolated(unsafe) var fuzzTarget = "record"

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
