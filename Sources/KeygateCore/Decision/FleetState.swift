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
