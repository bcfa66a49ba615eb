import FoundationEssentials
import Glibc
import KeygateCluster
import KeygateCore

/// The gates' observations of keys (last use, quota counts), formatted for output.
enum LastUsedFile {
    static func read(for policy: Policy) -> [String: String] {
        KeyObservations.lastUse(policy).mapValues { Timestamp.format(seconds: $0) }
    }
}

/// After a change to a key's standing: tells the fleet, or says on stderr why it could not.
func pushToFleet(_ policy: Policy, id: String, _ action: FleetStore.Action) {
    if let warning = FleetClient.push(policy, id: id, action: action) {
        StandardStreams.writeError("keygate: warning: \(warning)\n")
    }
}
