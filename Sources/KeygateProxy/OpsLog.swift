import FoundationEssentials
import Glibc
import KeygateCore
import Logging

/// The gate's own operational log (start, reloads, errors), apart from the usage log: swift-log
/// with a handler that writes one readable line per event to stderr,
/// `2026-11-23T18:00:00.123Z info reload (SIGHUP): 12 keys in 3 ms`.
public final class OpsLog: Sendable {
    let logger: Logger

    public init(level: Logger.Level = .info) {
        var l = Logger(label: "keygate") { _ in StderrLineHandler() }
        l.logLevel = level
        logger = l
    }

    public func info(_ message: @autoclosure () -> String) { logger.info("\(message())") }
    public func warning(_ message: @autoclosure () -> String) { logger.warning("\(message())") }
    public func error(_ message: @autoclosure () -> String) { logger.error("\(message())") }
}

struct StderrLineHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let line = "\(Timestamp.format(millis: Timestamp.nowMillis())) \(event.level) \(Self.oneLine("\(event.message)"))\n"
        StandardStreams.writeError(line)
    }

    /// Messages quote what others sent (a console user name, an upstream's error, Redis's):
    /// control characters are written as escapes, so no message can end its line early and
    /// forge the next one.
    static func oneLine(_ s: String) -> String {
        guard s.hasControlOrLineBreak else { return s }
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case _ where scalar.isControlOrLineBreak: out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
