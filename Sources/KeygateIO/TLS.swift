import CKeygateTLS
#if canImport(Glibc)
import Glibc
#endif

public struct TLSError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }

    /// OpenSSL's error queue, drained at the failing call.
    static func drained(_ what: String) -> TLSError {
        var buf = [CChar](repeating: 0, count: 256)
        kg_tls_error(&buf, buf.count)
        return TLSError("\(what): \(String(nulTerminated: buf))")
    }
}

/// The server's certificates as OpenSSL contexts: the first is the default, the others are
/// chosen by SNI. Immutable; a reload builds a new one, and sessions already open keep theirs
/// (OpenSSL counts the references).
public final class TLSServerContext: @unchecked Sendable {
    public struct Certificate: Sendable {
        /// The certificate's first DNS name (or common name).
        public let name: String
        /// Unix seconds.
        public let notAfter: Int64
    }

    let contexts: [OpaquePointer]
    let sni: UnsafeMutableRawPointer?
    public let certificates: [Certificate]

    public enum ClientCertificates: Sendable, Equatable {
        case off
        /// A certificate that verifies against `ca` may be used; others are ignored.
        case optional(ca: String)
        /// The handshake fails without a certificate that verifies against `ca`.
        case require(ca: String)
    }

    /// `pairs`: (certificate chain, private key) PEM paths.
    public init(pairs: [(cert: String, key: String)], minTLS13: Bool, clientCertificates: ClientCertificates = .off) throws(TLSError) {
        var built: [OpaquePointer] = []
        var certs: [Certificate] = []
        for (cert, key) in pairs {
            var err = [CChar](repeating: 0, count: 256)
            guard let ctx = kg_tls_server_ctx(cert, key, minTLS13 ? 1 : 0, &err, err.count) else {
                for c in built { SSL_CTX_free(c) }
                throw TLSError("\(cert): \(String(nulTerminated: err))")
            }
            let verify: (ca: String, mode: Int32)?
            switch clientCertificates {
            case .off: verify = nil
            case .optional(let ca): verify = (ca, 1)
            case .require(let ca): verify = (ca, 2)
            }
            if let verify, kg_tls_client_ca(ctx, verify.ca, verify.mode, &err, err.count) == 0 {
                SSL_CTX_free(ctx)
                for c in built { SSL_CTX_free(c) }
                throw TLSError("\(verify.ca): \(String(nulTerminated: err))")
            }
            var name = [CChar](repeating: 0, count: 256)
            kg_tls_first_name(ctx, &name, name.count)
            let notAfter = Int64(kg_tls_not_after(ctx))
            built.append(ctx)
            certs.append(Certificate(name: String(nulTerminated: name), notAfter: notAfter))
        }
        contexts = built
        certificates = certs
        var table: [OpaquePointer?] = built
        sni = table.withUnsafeMutableBufferPointer { kg_tls_sni_new($0.baseAddress, Int32($0.count)) }
    }

    deinit {
        kg_tls_sni_free(sni)
        for c in contexts { SSL_CTX_free(c) }
    }

    /// A session for one new connection.
    public func session() -> TLSSession? {
        guard let first = contexts.first, let ssl = kg_tls_session(first) else { return nil }
        return TLSSession(ssl: ssl, owner: self)
    }
}

/// TLS to the upstream: the CA to verify against (or the system's), and the name to ask for.
public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let serverName: String
    public let verify: Bool

    public init(ca: String?, serverName: String, verify: Bool) throws(TLSError) {
        var err = [CChar](repeating: 0, count: 256)
        guard let c = kg_tls_client_ctx(ca, verify ? 1 : 0, &err, err.count) else {
            throw TLSError("\(ca ?? "system CA store"): \(String(nulTerminated: err))")
        }
        ctx = c
        self.serverName = serverName
        self.verify = verify
    }

    deinit { SSL_CTX_free(ctx) }

    public func session() -> TLSSession? {
        guard let ssl = kg_tls_client_session(ctx, serverName, verify ? 1 : 0) else { return nil }
        return TLSSession(ssl: ssl, owner: self)
    }
}

/// One TLS connection's state, on memory BIOs: the loop reads ciphertext from the socket and
/// feeds it in; plaintext comes out; what OpenSSL wants to send is taken out and written by the
/// connection's own output buffer, so the socket stays the loop's alone.
public final class TLSSession {
    let ssl: OpaquePointer
    /// Keeps the contexts (and the SNI table they point at) alive while the session lives.
    let owner: AnyObject
    public private(set) var handshakeDone = false
    /// Pieces up to this size together are encrypted as one record.
    static let coalesceLimit = 16384
    /// The verified client certificate's SHA-256, set when the handshake completes.
    public private(set) var peerSHA256: [UInt8]?

    init(ssl: OpaquePointer, owner: AnyObject) {
        self.ssl = ssl
        self.owner = owner
    }

    deinit { SSL_free(ssl) }

    public enum Progress {
        /// Nothing new for the application (the handshake goes on, or a record is partial).
        case waiting
        /// The handshake finished during this call.
        case established
    }

    /// Feeds ciphertext; hands decrypted bytes to `plaintext` (in `scratch`).
    public func receive(_ cipher: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer, plaintext: (UnsafeRawBufferPointer) -> Void)
        throws(TLSError) -> Progress
    {
        var offset = 0
        while offset < cipher.count {
            let n = kg_tls_feed(ssl, cipher.baseAddress! + offset, Int32(cipher.count - offset))
            if n <= 0 { throw TLSError.drained("feeding TLS input") }
            offset += Int(n)
        }
        var progress = Progress.waiting
        if !handshakeDone {
            switch kg_tls_handshake(ssl) {
            case 1:
                handshakeDone = true
                progress = .established
                // Read before any request on this connection is: the first one may share the
                // handshake's last read.
                peerSHA256 = peerFingerprint()
            case 0:
                return .waiting
            default:
                if let why = kg_tls_verify_error(ssl) { throw TLSError("certificate verification failed: \(String(cString: why))") }
                throw TLSError.drained("handshake")
            }
        }
        while true {
            let n = kg_tls_read(ssl, scratch.baseAddress!, Int32(scratch.count))
            if n > 0 {
                plaintext(UnsafeRawBufferPointer(rebasing: scratch[0..<Int(n)]))
                // Nothing left to decrypt: skip the read that would only say "want more".
                if kg_tls_has_input(ssl) == 0 { return progress }
                continue
            }
            if n == 0 { return progress }
            throw TLSError.drained("read")
        }
    }

    /// Encrypts `parts`; the records are then in `takeOutput`.
    public func send<Parts: Collection<UnsafeRawBufferPointer>>(_ parts: Parts) throws(TLSError) {
        var total = 0
        for p in parts { total += p.count }
        if parts.count > 1 && total > 0 && total <= Self.coalesceLimit {
            // Small pieces (a head and its body) go out as one record, as nginx's ssl_buffer
            // does: one encryption and one record header instead of one per piece.
            var failure: TLSError?
            withUnsafeTemporaryAllocation(byteCount: total, alignment: 1) { buf in
                var at = 0
                for p in parts where !p.isEmpty {
                    UnsafeMutableRawBufferPointer(rebasing: buf[at..<(at + p.count)]).copyMemory(from: p)
                    at += p.count
                }
                if kg_tls_write(ssl, buf.baseAddress!, Int32(total)) != Int32(total) { failure = TLSError.drained("write") }
            }
            if let failure { throw failure }
            return
        }
        for p in parts where !p.isEmpty {
            var offset = 0
            while offset < p.count {
                let n = kg_tls_write(ssl, p.baseAddress! + offset, Int32(min(p.count - offset, 1 << 30)))
                if n <= 0 { throw TLSError.drained("write") }
                offset += Int(n)
            }
        }
    }

    /// Starts a client handshake (the ClientHello is then in `takeOutput`), or goes on with it.
    /// True once it is done.
    public func continueHandshake() throws(TLSError) -> Bool {
        if handshakeDone { return true }
        switch kg_tls_handshake(ssl) {
        case 1:
            handshakeDone = true
            return true
        case 0:
            return false
        default:
            if let why = kg_tls_verify_error(ssl) { throw TLSError("certificate verification failed: \(String(cString: why))") }
            throw TLSError.drained("handshake")
        }
    }

    /// A close_notify alert, to send before closing.
    public func shutdown() {
        _ = SSL_shutdown(ssl)
    }

    /// Moves ciphertext waiting for the socket into `buffer`; returns how many bytes (0 = none).
    public func takeOutput(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = kg_tls_take(ssl, buffer.baseAddress!, Int32(buffer.count))
        return n > 0 ? Int(n) : 0
    }

    /// The SHA-256 of the client's certificate, when one was presented and verified.
    public func peerFingerprint() -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 32)
        return kg_tls_peer_fingerprint(ssl, &out) == 1 ? out : nil
    }

    /// The SHA-256 of the first certificate in a PEM file (`keys create --client-cert`).
    public static func fingerprint(ofCertificateFile path: String) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 32)
        return kg_cert_file_fingerprint(path, &out) == 1 ? out : nil
    }

    /// 12 or 13, once established.
    public var version: Int { Int(kg_tls_version(ssl)) }
}
