import ArgumentParser
import Foundation
import KeygateCore

// Exit codes: 0 ok, 1 refused or invalid input (one line on stderr), 2 usage error.
do {
    var command = try Keygate.parseAsRoot()
    try command.run()
} catch let error as CLIFailure {
    FileHandle.standardError.write("keygate: \(error.message)\n".data(using: .utf8)!)
    exit(1)
} catch {
    let code = Keygate.exitCode(for: error)
    if code == .success {
        Keygate.exit(withError: error)
    }
    if code == .validationFailure {
        FileHandle.standardError.write((Keygate.fullMessage(for: error) + "\n").data(using: .utf8)!)
        exit(2)
    }
    Keygate.exit(withError: error)
}
