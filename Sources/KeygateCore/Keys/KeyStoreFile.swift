import FoundationEssentials
import Glibc

/// A problem in a key store file, with the line it is on.
public struct KeyStoreError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let line: Int?
    public let message: String

    public var description: String {
        if let line { return "\(path):\(line): \(message)" }
        return "\(path): \(message)"
    }
}

/// Reading and writing `keys.jsonl`: one JSON object per line, sorted by id, written atomically.
public enum KeyStoreFile {
    /// Loads every record, or throws naming the first bad line. A missing file is an empty store.
    public static func load(_ path: String) throws(KeyStoreError) -> [KeyRecord] {
        guard let bytes = try readBytes(path) else { return [] }
        return try parse(Data(bytes), path: path)
    }

    public static func parse(_ data: Data, path: String) throws(KeyStoreError) -> [KeyRecord] {
        var records: [KeyRecord] = []
        var lineOf: [Int] = []
        var failure: KeyStoreError?
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            TextLines.forEach(bytes) { number, r in
                do {
                    records.append(try KeyRecordCodec.decode(UnsafeBufferPointer(rebasing: bytes[r])))
                    lineOf.append(number)
                    return true
                } catch {
                    failure = KeyStoreError(path: path, line: number, message: "\(error)")
                    return false
                }
            }
        }
        if let failure { throw failure }
        // Validate what JSON cannot: hashes, unique ids and hashes.
        var ids = Set<String>()
        var hashes = Set<String>()
        ids.reserveCapacity(records.count)
        hashes.reserveCapacity(records.count)
        for (i, record) in records.enumerated() {
            if KeyDigest(stored: record.hash) == nil {
                throw KeyStoreError(path: path, line: lineOf[i], message: "hash must be sha256: and 64 lowercase hex digits")
            }
            if record.id.isEmpty { throw KeyStoreError(path: path, line: lineOf[i], message: "empty id") }
            if !ids.insert(record.id).inserted {
                throw KeyStoreError(path: path, line: lineOf[i], message: "duplicate id \(record.id)")
            }
            if !hashes.insert(record.hash).inserted {
                throw KeyStoreError(path: path, line: lineOf[i], message: "duplicate hash (the same key twice)")
            }
        }
        if !records.isSorted(by: { $0.id < $1.id }) { records.sort { $0.id < $1.id } }
        return records
    }

    /// One JSON line per record, sorted by id.
    public static func encode(_ records: [KeyRecord]) -> Data {
        var out: [UInt8] = []
        out.reserveCapacity(records.count * 320)
        let sorted = records.isSorted(by: { $0.id < $1.id }) ? records : records.sorted { $0.id < $1.id }
        for r in sorted { KeyRecordCodec.encode(r, to: &out) }
        return Data(out)
    }

    /// The whole file, read straight into bytes; nil when it does not exist.
    static func readBytes(_ path: String) throws(KeyStoreError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw KeyStoreError(path: path, line: nil, message: "cannot read the key store: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var off = 0
        while off < out.count {
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            off += n
        }
        if off < out.count { out.removeSubrange(off...) }
        return out
    }

    public static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o600) throws(KeyStoreError) {
        try writeAtomically([UInt8](data), to: path, mode: mode)
    }

    /// Replaces `path` atomically: temporary file, fsync, rename, directory fsync; mode 0600.
    public static func writeAtomically(_ data: [UInt8], to path: String, mode: mode_t = 0o600) throws(KeyStoreError) {
        try writeAtomically(data, to: path, mode: mode, beforeRename: {})
    }

    /// As above; `beforeRename` runs once the new content is safely on disk and before it
    /// replaces the old. If it throws, nothing is replaced.
    public static func writeAtomically(
        _ data: [UInt8], to path: String, mode: mode_t = 0o600, beforeRename: () throws(KeyStoreError) -> Void
    ) throws(KeyStoreError) {
        let dir = PathText.directory(of: path)
        let tmp = (dir.isEmpty ? "." : dir) + "/.\(PathText.lastComponent(path)).tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw KeyStoreError(path: path, line: nil, message: "cannot write: \(String(cString: strerror(errno)))") }
        var failure = writeAndSync(fd, data)
        fchmod(fd, mode)
        keepOwner(of: path, folder: dir.isEmpty ? "." : dir, on: fd)
        close(fd)
        if failure == 0 {
            do {
                try beforeRename()
            } catch {
                unlink(tmp)
                throw error
            }
            if rename(tmp, path) != 0 { failure = errno }
        }
        guard failure == 0 else {
            unlink(tmp)
            throw KeyStoreError(path: path, line: nil, message: "cannot write: \(String(cString: strerror(failure)))")
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}

extension KeyStoreFile {
    /// Writes all of `data` and fsyncs; 0, or the errno that stopped it.
    static func writeAndSync(_ fd: Int32, _ data: [UInt8]) -> Int32 {
        var failure = data.withUnsafeBytes { System.writeAll(fd, $0).error }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        return failure
    }

    /// A file replaced by root (say, `sudo keygate keys …`) keeps the owner it had, or takes
    /// its folder's, so the gate's own user can still read it. Without root this is a no-op.
    static func keepOwner(of path: String, folder: String, on fd: Int32) {
        guard geteuid() == 0 else { return }
        var st = stat()
        if stat(path, &st) != 0 && stat(folder, &st) != 0 { return }
        _ = fchown(fd, st.st_uid, st.st_gid)
    }
}

extension Array {
    func isSorted(by areInOrder: (Element, Element) -> Bool) -> Bool {
        var i = 1
        while i < count {
            if areInOrder(self[i], self[i - 1]) { return false }
            i += 1
        }
        return true
    }
}
