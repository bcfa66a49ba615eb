import Foundation

/// Identity of a file's content as the file system tells it: changes on every replace or write.
public struct FileStamp: Equatable, Sendable {
    public let inode: UInt64
    public let size: Int64
    public let mtimeNanos: Int64

    public static func of(_ path: String) -> FileStamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileStamp(
            inode: UInt64(st.st_ino), size: Int64(st.st_size), mtimeNanos: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }
}

public struct LoadError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Builds snapshots: the same code path for `check`, `serve` and every reload.
public enum SnapshotLoader {
    public static func load(policyPath: String, previous: Snapshot? = nil) throws -> Snapshot {
        let policy: Policy
        do {
            policy = try PolicyLoader.load(path: policyPath)
        } catch {
            throw LoadError(error.description)
        }
        return try build(policy: policy, previous: previous)
    }

    /// Re-reads the key store and (if its file changed) the GeoIP database, keeping the policy.
    public static func reloadKeys(_ current: Snapshot) throws -> Snapshot {
        try build(policy: current.policy, previous: current)
    }

    static func build(policy: Policy, previous: Snapshot?) throws -> Snapshot {
        let keysStamp = FileStamp.of(policy.keysFile)
        let records: [KeyRecord]
        do {
            records = try KeyStoreFile.load(policy.keysFile)
        } catch {
            throw LoadError(error.description)
        }
        for r in records {
            for ip in r.allow_ips where CIDR(ip) == nil {
                throw LoadError("\(policy.keysFile): key \(r.id): allow_ips \"\(ip)\" is not a CIDR")
            }
        }
        var geoip: GeoIPDatabase? = nil
        var geoStamp: FileStamp? = nil
        if let path = policy.geoipDB {
            geoStamp = FileStamp.of(path)
            if let prev = previous, let prevDB = prev.geoip, prevDB.path == path, prev.geoipStamp == geoStamp, prev.policy.geoipDB == path {
                geoip = prevDB
            } else {
                do {
                    geoip = try GeoIPDatabase(path: path)
                } catch {
                    throw LoadError(error.description)
                }
            }
        }
        return Snapshot(policy: policy, records: records, geoip: geoip, keysStamp: keysStamp, geoipStamp: geoStamp, previous: previous)
    }
}
