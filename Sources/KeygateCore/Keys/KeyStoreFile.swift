import Foundation

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
        guard let data = FileManager.default.contents(atPath: path) else {
            if !FileManager.default.fileExists(atPath: path) { return [] }
            throw KeyStoreError(path: path, line: nil, message: "cannot read the key store")
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws(KeyStoreError) -> [KeyRecord] {
        // Decode all lines as one JSON array (fast); on failure, go line by line to name the line.
        var array = Data()
        array.reserveCapacity(data.count + 2)
        array.append(UInt8(ascii: "["))
        var lines: [Range<Int>] = []
        var start = data.startIndex
        data.withUnsafeBytes { raw in
            var i = 0
            let n = raw.count
            while i <= n {
                if i == n || raw[i] == 0x0A {
                    var s = start - data.startIndex
                    var e = i
                    while s < e, raw[s] == 0x20 || raw[s] == 0x09 || raw[s] == 0x0D { s += 1 }
                    while e > s, raw[e - 1] == 0x20 || raw[e - 1] == 0x09 || raw[e - 1] == 0x0D { e -= 1 }
                    lines.append(s..<e)
                    start = data.startIndex + i + 1
                }
                i += 1
            }
        }
        var first = true
        for r in lines where !r.isEmpty {
            if !first { array.append(UInt8(ascii: ",")) }
            first = false
            array.append(data[(data.startIndex + r.lowerBound)..<(data.startIndex + r.upperBound)])
        }
        array.append(UInt8(ascii: "]"))
        let decoder = JSONDecoder()
        var records: [KeyRecord]
        do {
            records = try decoder.decode([KeyRecord].self, from: array)
        } catch {
            for (index, r) in lines.enumerated() where !r.isEmpty {
                let line = data[(data.startIndex + r.lowerBound)..<(data.startIndex + r.upperBound)]
                do {
                    _ = try decoder.decode(KeyRecord.self, from: line)
                } catch {
                    throw KeyStoreError(path: path, line: index + 1, message: describe(error))
                }
            }
            throw KeyStoreError(path: path, line: nil, message: describe(error))
        }
        // Validate what JSON cannot: hashes, unique ids and hashes.
        var ids = Set<String>()
        var hashes = Set<String>()
        var lineOf: [Int] = []
        for (index, r) in lines.enumerated() where !r.isEmpty { lineOf.append(index + 1) }
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
        records.sort { $0.id < $1.id }
        return records
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing field \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type for \"\(c.codingPath.map(\.stringValue).joined(separator: "."))\""
        case DecodingError.dataCorrupted(let c):
            if let path = c.codingPath.last { return "invalid value for \"\(path.stringValue)\"" }
            return "not valid JSON"
        default: return "not valid JSON"
        }
    }

    /// One JSON line per record, sorted by id.
    public static func encode(_ records: [KeyRecord]) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var out = Data()
        for r in records.sorted(by: { $0.id < $1.id }) {
            out.append(try! encoder.encode(r))
            out.append(0x0A)
        }
        return out
    }

    /// Replaces `path` atomically: temporary file, fsync, rename, directory fsync; mode 0600.
    public static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o600) throws(KeyStoreError) {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw KeyStoreError(path: path, line: nil, message: "cannot write: \(String(cString: strerror(errno)))") }
        var ok = true
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    ok = false
                    break
                }
                off += n
            }
        }
        if ok && fsync(fd) != 0 { ok = false }
        fchmod(fd, mode)
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw KeyStoreError(path: path, line: nil, message: "cannot write: \(reason)")
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
