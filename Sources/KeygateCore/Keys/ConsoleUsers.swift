import COpenSSL
import FoundationEssentials
import Glibc

/// The people who may use the web console: `console-users.jsonl`, one user per line,
/// `{"name","role","password","created_at"}`, where `password` is a salted scrypt hash
/// (`scrypt$N$r$p$salt$hash`, base64). Written only by `keygate console-users`, atomically,
/// mode 0600; read by the console at every login, so a change needs no restart.
public struct ConsoleUser: Sendable, Equatable {
    public enum Role: String, Sendable { case admin, viewer }
    public var name: String
    public var role: Role
    public var password: String
    public var createdAt: String
}

public enum ConsoleUsers {
    /// scrypt's cost: 2^15 × 8 × 128 bytes = 32 MiB and some tens of milliseconds per guess.
    static let n: UInt64 = 1 << 15, r: UInt64 = 8, p: UInt64 = 1

    public static func read(_ path: String) throws(KeyError) -> [ConsoleUser] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        var users: [ConsoleUser] = []
        for (i, line) in data.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            guard let o = JSONValue.parseObject(line), let name = o["name"]?.string,
                let role = o["role"]?.string.flatMap(ConsoleUser.Role.init), let password = o["password"]?.string
            else {
                throw KeyError("\(path):\(i + 1): not a console user (name, role admin|viewer, password)")
            }
            users.append(ConsoleUser(name: name, role: role, password: password, createdAt: o["created_at"]?.string ?? ""))
        }
        return users
    }

    public static func add(_ path: String, name: String, role: ConsoleUser.Role, password: String) throws(KeyError) {
        guard isValidName(name) else { throw KeyError("a console user name is 1–64 letters, digits, . _ @ or -") }
        guard password.utf8.count >= 8 else { throw KeyError("the password must have at least 8 characters") }
        try change(path) { (users) throws(KeyError) in
            if users.contains(where: { $0.name == name }) { throw KeyError("console user \(name) already exists (remove it first to change it)") }
            users.append(ConsoleUser(name: name, role: role, password: hash(password), createdAt: Timestamp.format(seconds: Timestamp.nowSeconds())))
        }
    }

    public static func remove(_ path: String, name: String) throws(KeyError) {
        try change(path) { (users) throws(KeyError) in
            guard users.contains(where: { $0.name == name }) else { throw KeyError("no console user \(name)") }
            users.removeAll { $0.name == name }
        }
    }

    static func change(_ path: String, _ body: (inout [ConsoleUser]) throws(KeyError) -> Void) throws(KeyError) {
        let lock: KeyStoreLock
        do {
            lock = try KeyStoreLock(storePath: path)
        } catch {
            throw KeyError("\(error)")
        }
        defer { withExtendedLifetime(lock) {} }
        var users = try read(path)
        try body(&users)
        var out: [UInt8] = []
        for u in users {
            let o: JSONValue = ["name": JSONValue(u.name), "role": JSONValue(u.role.rawValue), "password": JSONValue(u.password), "created_at": JSONValue(u.createdAt)]
            guard let line = o.encoded() else { continue }
            out.append(contentsOf: line)
            out.append(0x0A)
        }
        do {
            try KeyStoreFile.writeAtomically(out, to: path, mode: 0o600)
        } catch {
            throw KeyError("\(error)")
        }
    }

    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64
            && s.utf8.allSatisfy { Base62.isDigit($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "-") }
    }

    // MARK: passwords

    public static func hash(_ password: String) -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        _ = RAND_bytes(&salt, 16)
        let derived = scrypt(password, salt: salt, n: n, r: r, p: p) ?? []
        return "scrypt$\(n)$\(r)$\(p)$\(Data(salt).base64EncodedString())$\(Data(derived).base64EncodedString())"
    }

    /// Whether `password` matches `stored`, compared in constant time.
    public static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "scrypt", let n = UInt64(parts[1]), let r = UInt64(parts[2]), let p = UInt64(parts[3]),
            n >= 2, n <= 1 << 20, n & (n - 1) == 0, r >= 1, r <= 32, p >= 1, p <= 16,
            let salt = Data(base64Encoded: String(parts[4])), let want = Data(base64Encoded: String(parts[5])), want.count == 32,
            let got = scrypt(password, salt: [UInt8](salt), n: n, r: r, p: p)
        else { return false }
        return [UInt8](want).withUnsafeBytes { a in got.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, 32) == 0 } }
    }

    /// A hash to check against when the user does not exist, so that a missing name costs as
    /// long as a wrong password.
    public static let decoy = hash(Base62.random(24).map { String(UnicodeScalar($0)) }.joined())

    static func scrypt(_ password: String, salt: [UInt8], n: UInt64, r: UInt64, p: UInt64) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 32)
        let pw = Array(password.utf8)
        let ok = pw.withUnsafeBufferPointer { pwp in
            salt.withUnsafeBufferPointer { sp in
                EVP_PBE_scrypt(
                    pwp.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, pwp.count, sp.baseAddress, sp.count, n, r, p,
                    128 * r * n * p + (16 << 20), &out, 32)
            }
        }
        return ok == 1 ? out : nil
    }
}
