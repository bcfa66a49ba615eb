import Synchronization

/// How this gate stands towards the fleet, read once per keyed request (one relaxed load) and
/// written by the cluster sync. Shared by every snapshot of one process.
public final class FleetState: Sendable {
    public enum Mode: UInt8, Sendable {
        /// No `cluster`: limits divided by `limits.replicas`, as configured.
        case alone = 0
        /// Redis reachable: limits hold for the fleet as a whole, reconciled every sync.
        case shared = 1
        /// Redis unreachable, `on_redis_down: local`: each gate enforces alone.
        case downLocal = 2
        /// Redis unreachable, `on_redis_down: deny`: keyed requests are answered 503.
        case downDeny = 3
    }

    private let raw: Atomic<UInt8>

    public init(_ mode: Mode = .alone) { raw = Atomic(mode.rawValue) }

    public var mode: Mode {
        @inline(__always) get { Mode(rawValue: raw.load(ordering: .relaxed)) ?? .alone }
    }

    public func set(_ m: Mode) { raw.store(m.rawValue, ordering: .relaxed) }
}

/// A change to a key pushed by another host before this gate's copy of the store shows it.
public enum PushedStatus: UInt8, Sendable {
    case none = 0, disabled = 1, revoked = 2, deleted = 3
}

/// A pushed change and when the host that made it published it (its clock, the clock that also
/// wrote the record's `updated_at`).
public struct PushedChange: Sendable, Equatable {
    public var status: PushedStatus
    public var atMillis: Int64

    public init(status: PushedStatus, atMillis: Int64) {
        self.status = status
        self.atMillis = atMillis
    }

    /// Whether the change still says more than `record`, this gate's copy of the key. A
    /// revocation or a delete cannot be undone, so it stands until the copy shows the key
    /// revoked (a delete, always: a copy that still holds the key is older). A disable stands
    /// until the copy shows it, or a change to the key made in a later second (the store is one
    /// file written in order, so such a copy holds the disable and what undid it); within the
    /// same second it stands, which errs on the side of refusing. An enable older than the copy
    /// is passed over the same way. A key not in the copy yet keeps every change: the copy that
    /// brings the key may predate it.
    public func stands(over record: KeyRecord?) -> Bool {
        guard let record else { return true }
        switch status {
        case .deleted: return true
        case .revoked: return record.status != .revoked
        case .disabled where record.status == .disabled: return false
        case .disabled, .none:
            guard let updated = Timestamp.parseMillis(record.updated_at) else { return true }
            return updated / 1000 <= atMillis / 1000
        }
    }
}

extension PushedChange {
    /// How many pushed changes a gate keeps. Changes for ids its copy does not hold yet are kept
    /// (the copy that brings the key may predate them), so this bounds what a flood of messages
    /// naming unknown ids can make a gate hold.
    public static let maxKept = 100_000

    /// Makes room in `changes` for one more: when it is full, the oldest changes for ids that
    /// `isKnown` does not hold go, down to nine tenths of `limit`. Changes to known keys stay.
    public static func makeRoom(in changes: inout [String: PushedChange], limit: Int = maxKept, isKnown: (String) -> Bool) {
        guard changes.count >= limit else { return }
        let unknown = changes.filter { !isKnown($0.key) }.sorted { $0.value.atMillis < $1.value.atMillis }
        for (id, _) in unknown.prefix(changes.count - limit * 9 / 10) { changes[id] = nil }
    }
}
