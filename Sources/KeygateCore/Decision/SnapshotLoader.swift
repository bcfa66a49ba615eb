import FoundationEssentials
import Glibc

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
        let (keys, lines) = try loadKeys(policy: policy, previous: previous)
        var geoip: GeoIPDatabase? = nil
        var geoStamp: FileStamp? = nil
        if let path = policy.geoipDB {
            geoStamp = FileStamp.of(path)
            if let prev = previous, let prevDB = prev.geoip, prevDB.path == path, prev.geoipStamp == geoStamp {
                geoip = prevDB
            } else {
                do {
                    geoip = try GeoIPDatabase(path: path)
                } catch {
                    throw LoadError(error.description)
                }
            }
        }
        let fleet = previous?.fleet ?? FleetState(policy.cluster == nil ? .alone : .downLocal)
        return Snapshot(policy: policy, keys: keys, entriesByLine: lines, geoip: geoip, keysStamp: keysStamp, geoipStamp: geoStamp, fleet: fleet)
    }

    /// Reads the key store into entries by key digest. A line unchanged since `previous` keeps
    /// its entry (decoded, validated and precomputed once), so reloading a large store after a
    /// one-key change costs little more than reading it.
    static func loadKeys(policy: Policy, previous: Snapshot?) throws -> ([KeyDigest: KeyEntry], [KeyDigest: KeyEntry]) {
        let path = policy.keysFile
        let bytes: [UInt8]
        do {
            guard let b = try KeyStoreFile.readBytes(path) else { return ([:], [:]) }
            bytes = b
        } catch {
            throw LoadError(error.description)
        }
        // Entries depend on the scopes and the default limits: reuse them only while those hold.
        let sameContext = previous.map {
            $0.policy.scopes == policy.scopes && $0.policy.limits.defaultRate == policy.limits.defaultRate
                && $0.policy.limits.defaultBurst == policy.limits.defaultBurst && $0.policy.limits.replicas == policy.limits.replicas
                && $0.policy.identityPrefix == policy.identityPrefix
                && ($0.policy.cluster == nil) == (policy.cluster == nil)
        } ?? false
        let reusable = sameContext ? previous!.entriesByLine : [:]
        var keys: [KeyDigest: KeyEntry] = [:]
        var lines: [KeyDigest: KeyEntry] = [:]
        var ids = Set<String>()
        keys.reserveCapacity(reusable.count + 16)
        lines.reserveCapacity(reusable.count + 16)
        ids.reserveCapacity(reusable.count + 16)
        var failure: LoadError?
        bytes.withUnsafeBufferPointer { p in
            TextLines.forEach(p) { number, r in
                let line = UnsafeBufferPointer(rebasing: p[r])
                let lineDigest = KeyDigest(hashing: UnsafeRawBufferPointer(line))
                let entry: KeyEntry
                if let known = reusable[lineDigest] {
                    entry = known
                } else {
                    do {
                        let record = try KeyRecordCodec.decode(line)
                        guard let digest = KeyDigest(stored: record.hash) else {
                            failure = LoadError("\(path):\(number): hash must be sha256: and 64 lowercase hex digits")
                            return false
                        }
                        for ip in record.allow_ips where CIDR(ip) == nil {
                            failure = LoadError("\(path):\(number): allow_ips \"\(ip)\" is not a CIDR")
                            return false
                        }
                        // Last use and limiter state live on across changes to the key's line.
                        let old = previous?.keys[digest]
                        entry = KeyEntry(
                            record: record, scopes: policy.scopes, limits: policy.limits, clustered: policy.cluster != nil, previous: old, identityPrefix: policy.identityPrefix)
                    } catch {
                        failure = LoadError("\(path):\(number): \(error)")
                        return false
                    }
                }
                if !ids.insert(entry.record.id).inserted {
                    failure = LoadError("\(path):\(number): duplicate id \(entry.record.id)")
                    return false
                }
                if keys.updateValue(entry, forKey: entry.digest) != nil {
                    failure = LoadError("\(path):\(number): duplicate hash (the same key twice)")
                    return false
                }
                lines[lineDigest] = entry
                return true
            }
        }
        if let failure { throw failure }
        return (keys, lines)
    }
}
