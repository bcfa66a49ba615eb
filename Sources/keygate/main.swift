import ArgumentParser
import FoundationEssentials
import Glibc
import KeygateCore

// Exit codes: 0 ok, 1 refused or invalid input (one line on stderr), 2 usage error.
do {
    var command = try Keygate.parseAsRoot()
    try command.run()
} catch let error as CLIFailure {
    StandardStreams.writeError("keygate: \(error.message)\n")
    exit(1)
} catch {
    let code = Keygate.exitCode(for: error)
    if code == .success {
        Keygate.exit(withError: error)
    }
    if code == .validationFailure {
        StandardStreams.writeError(Keygate.fullMessage(for: error) + "\n")
        exit(2)
    }
    Keygate.exit(withError: error)
}
