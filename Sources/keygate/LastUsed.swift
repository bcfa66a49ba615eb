import Foundation
import KeygateCore

/// The gate's last-use times, formatted for output.
enum LastUsedFile {
    static func read(for policy: Policy) -> [String: String] {
        KeyStateFile.read(KeyStateFile.path(for: policy)).mapValues { Timestamp.format(seconds: $0) }
    }
}
