import FoundationEssentials
import Glibc

/// The key store as the CLI edits it: every line kept as written, with only its id and hash
/// read, so a change to one key in a 100,000-key store decodes one record, not all of them.
struct KeyStoreDocument {
    struct Line {
        var id: String
        var hash: KeyDigest
        var number: Int
        var bytes: ArraySlice<UInt8>
    }

    let path: String
    var lines: [Line] = []
    /// The file as it was read, to notice a change made underneath this command.
    let stamp: FileStamp?

    static func load(_ path: String) throws(KeyStoreError) -> KeyStoreDocument {
        let stamp = FileStamp.of(path)
        var doc = KeyStoreDocument(path: path, stamp: stamp)
        guard let bytes = try KeyStoreFile.readBytes(path) else { return doc }
        var failure: KeyStoreError?
        var hashes = Set<KeyDigest>()
        bytes.withUnsafeBufferPointer { p in
            TextLines.forEach(p) { number, r in
                do {
                    let (id, hash) = try KeyRecordCodec.peekIDAndHash(UnsafeBufferPointer(rebasing: p[r]))
                    if !hashes.insert(hash).inserted {
                        failure = KeyStoreError(path: path, line: number, message: "duplicate hash (the same key twice)")
                        return false
                    }
                    doc.lines.append(Line(id: id, hash: hash, number: number, bytes: bytes[r]))
                    return true
                } catch {
                    failure = KeyStoreError(path: path, line: number, message: "\(error)")
                    return false
                }
            }
        }
        if let failure { throw failure }
        if !doc.lines.isSorted(by: { $0.id < $1.id }) { doc.lines.sort { $0.id < $1.id } }
        var i = 1
        while i < doc.lines.count {
            if doc.lines[i].id == doc.lines[i - 1].id {
                throw KeyStoreError(path: path, line: max(doc.lines[i].number, doc.lines[i - 1].number), message: "duplicate id \(doc.lines[i].id)")
            }
            i += 1
        }
        return doc
    }

    func index(of id: String) -> Int? {
        var lo = 0
        var hi = lines.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if lines[mid].id < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < lines.count && lines[lo].id == id ? lo : nil
    }

    func contains(id: String) -> Bool { index(of: id) != nil }

    func record(at i: Int) throws(KeyStoreError) -> KeyRecord {
        do {
            return try lines[i].bytes.withUnsafeBufferPointer { (p) throws(KeyRecordCodec.Failure) -> KeyRecord in try KeyRecordCodec.decode(p) }
        } catch {
            throw KeyStoreError(path: path, line: lines[i].number, message: error.description)
        }
    }

    static func line(_ r: KeyRecord) -> ArraySlice<UInt8> {
        var out: [UInt8] = []
        KeyRecordCodec.encode(r, to: &out)
        out.removeLast()  // the newline is added when writing
        return out[...]
    }

    mutating func upsert(_ r: KeyRecord) {
        let line = Line(id: r.id, hash: KeyDigest(stored: r.hash)!, number: 0, bytes: Self.line(r))
        if let i = index(of: r.id) {
            lines[i] = line
        } else {
            var lo = 0
            var hi = lines.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if lines[mid].id < r.id { lo = mid + 1 } else { hi = mid }
            }
            lines.insert(line, at: lo)
        }
    }

    mutating func remove(id: String) {
        if let i = index(of: id) { lines.remove(at: i) }
    }

    func bytes() -> [UInt8] {
        var size = 0
        for l in lines { size += l.bytes.count + 1 }
        var out: [UInt8] = []
        out.reserveCapacity(size)
        for l in lines {
            out.append(contentsOf: l.bytes)
            out.append(0x0A)
        }
        return out
    }
}
