import COpenSSL
import FoundationEssentials
import Glibc
import KeygateCore
import Synchronization

/// Signed-in console users (server-side sessions behind a random cookie) and the brakes on
/// password guessing: every failure is answered slowly, and after `maxFailures` within
/// `failureWindow` a user (or an address) is locked out for `lockout`, whatever the password.
final class ConsoleSessions: Sendable {
    struct Session: Sendable {
        let user: String
        /// The user's stored password hash at sign-in: a user removed and added again (a new
        /// password, a new salt) no longer matches it, so the session ends with the old password.
        let credential: String
        let csrf: String
        let expiresMillis: Int64
    }

    struct Failures: Sendable {
        var count = 0
        var since: Int64 = 0
        var lockedUntil: Int64 = 0
    }

    static let maxFailures = 10
    static let maxAddressFailures = 30
    static let failureWindowMillis: Int64 = 15 * 60_000
    static let lockoutMillis: Int64 = 15 * 60_000
    /// How long a wrong password waits for its answer.
    static let failureDelayMillis = 1000

    let ttlMillis: Int64
    private let sessions = Mutex<[String: Session]>([:])
    private let failures = Mutex<[String: Failures]>([:])

    init(ttlMillis: Int64) { self.ttlMillis = ttlMillis }

    static func token() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        _ = RAND_bytes(&bytes, 32)
        return Data(bytes).base64EncodedString().replacing("+", with: "-").replacing("/", with: "_")
            .replacing("=", with: "")
    }

    func create(user: ConsoleUser) -> (token: String, session: Session) {
        let s = Session(user: user.name, credential: user.password, csrf: Self.token(), expiresMillis: Timestamp.nowMillis() + ttlMillis)
        let t = Self.token()
        sessions.withLock { table in
            // Expired sessions go when new ones come.
            let now = Timestamp.nowMillis()
            table = table.filter { $0.value.expiresMillis > now }
            table[t] = s
        }
        return (t, s)
    }

    func find(_ token: String) -> Session? {
        sessions.withLock { table in
            guard let s = table[token] else { return nil }
            if s.expiresMillis <= Timestamp.nowMillis() {
                table[token] = nil
                return nil
            }
            return s
        }
    }

    func end(_ token: String) { sessions.withLock { $0[token] = nil } }

    func endAll(user: String) { sessions.withLock { $0 = $0.filter { $0.value.user != user } } }

    /// Milliseconds until `user` or `address` may try again; 0 = they may.
    func lockedFor(user: String, address: String) -> Int64 {
        let now = Timestamp.nowMillis()
        return failures.withLock { f in
            max(f["u:" + user]?.lockedUntil ?? 0, f["a:" + address]?.lockedUntil ?? 0) - now
        }
    }

    func failed(user: String, address: String) {
        let now = Timestamp.nowMillis()
        failures.withLock { f in
            for (k, limit) in [("u:" + user, Self.maxFailures), ("a:" + address, Self.maxAddressFailures)] {
                var e = f[k] ?? Failures()
                if now - e.since > Self.failureWindowMillis { e = Failures(count: 0, since: now, lockedUntil: e.lockedUntil) }
                e.count += 1
                if e.count >= limit {
                    e.lockedUntil = now + Self.lockoutMillis
                    e.count = 0
                    e.since = now
                }
                f[k] = e
            }
            // Old entries go, so guessing random names cannot grow the table for ever.
            if f.count > 10_000 { f = f.filter { now - $0.value.since < Self.failureWindowMillis || $0.value.lockedUntil > now } }
        }
    }

    func succeeded(user: String) { failures.withLock { $0["u:" + user] = nil } }
}
