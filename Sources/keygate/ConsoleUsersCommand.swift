import ArgumentParser
import FoundationEssentials
import Glibc
import KeygateCore

struct ConsoleUsersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console-users", abstract: "Manage the people who may sign in to the web console.",
        subcommands: [ConsoleUsersAdd.self, ConsoleUsersList.self, ConsoleUsersRemove.self])
}

struct ConsoleUsersAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a console user; the password is read from standard input (never from the command line).")
    @Argument var name: String
    @Option(help: "admin (may change keys) or viewer (may only look).") var role: String
    @OptionGroup var options: ConfigOption

    func run() throws {
        guard let r = ConsoleUser.Role(rawValue: role) else { throw CLIFailure("--role must be admin or viewer") }
        let policy = try options.policy()
        var input = String(decoding: StandardStreams.readInput(), as: UTF8.self)
        // One trailing newline (from echo or a terminal) is not part of the password.
        if input.hasSuffix("\r\n") {
            input.removeLast(2)
        } else if input.hasSuffix("\n") {
            input.removeLast()
        }
        try attempt { () throws(KeyError) in try ConsoleUsers.add(policy.consoleUsersFile, name: name, role: r, password: input) }
        print("Added console user \(name) (\(r.rawValue)) to \(policy.consoleUsersFile)")
    }
}

struct ConsoleUsersList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List console users.")
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var options: ConfigOption

    func run() throws {
        let policy = try options.policy()
        let users = try attempt { () throws(KeyError) in try ConsoleUsers.read(policy.consoleUsersFile) }
        if json {
            Output.printJSON(users.map { ["name": $0.name, "role": $0.role.rawValue, "created_at": $0.createdAt] })
            return
        }
        Output.printTable([["NAME", "ROLE", "CREATED"]] + users.map { [$0.name, $0.role.rawValue, $0.createdAt] })
    }
}

struct ConsoleUsersRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a console user (their sessions end at once).")
    @Argument var name: String
    @OptionGroup var options: ConfigOption

    func run() throws {
        let policy = try options.policy()
        try attempt { () throws(KeyError) in try ConsoleUsers.remove(policy.consoleUsersFile, name: name) }
        print("Removed console user \(name)")
    }
}
