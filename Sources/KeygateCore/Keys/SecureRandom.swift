import COpenSSL

/// Cryptographic randomness from OpenSSL's `RAND_bytes`.
package enum SecureRandom {
    package static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        // Without entropy no key may be issued; this is not recoverable.
        precondition(ok == 1, "RAND_bytes failed")
        return out
    }
}
