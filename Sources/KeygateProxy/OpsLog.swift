import Foundation
import KeygateCore

/// The gate's own operational log (start, reloads, errors): one readable line per event on
/// stderr, apart from the usage log.
public final class OpsLog: Sendable {
    public enum Level: Int, Sendable { case debug, info, warning, error }
    let minimum: Level

    public init(minimum: Level = .info) { self.minimum = minimum }

    public func info(_ message: @autoclosure () -> String) { write(.info, message()) }
    public func warning(_ message: @autoclosure () -> String) { write(.warning, message()) }
    public func error(_ message: @autoclosure () -> String) { write(.error, message()) }

    func write(_ level: Level, _ message: String) {
        guard level.rawValue >= minimum.rawValue else { return }
        let tag: String
        switch level {
        case .debug: tag = "debug"
        case .info: tag = "info"
        case .warning: tag = "warning"
        case .error: tag = "error"
        }
        let line = "\(Timestamp.format(millis: Timestamp.nowMillis())) \(tag) \(message)\n"
        FileHandle.standardError.write(line.data(using: .utf8)!)
    }
}
