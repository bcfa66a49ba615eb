import KeygateIO

/// TLS on a client connection: ciphertext in from the socket, plaintext on to the phases, and
/// records out through the connection's own output buffer.
extension ClientConnection {
    /// Ciphertext from the socket: the handshake goes on, or plaintext goes to `onBytes`.
    func tlsReceive(_ t: TLSSession, _ cipher: UnsafeRawBufferPointer) {
        do {
            // The loop's read buffer already gave its bytes to OpenSSL: it takes the plaintext.
            let progress = try t.receive(cipher, scratch: ctx.loop.readBuffer) { plain in
                if phase != .closed { onBytes(plain) }
            }
            if case .established = progress { ctx.metrics.tlsHandshakes[0] += 1 }
        } catch {
            if !t.handshakeDone { ctx.metrics.tlsHandshakes[1] += 1 }
            flushTLSOutput(t)  // the alert, if any
            abort()
            return
        }
        flushTLSOutput(t)
    }

    func flushTLSOutput(_ t: TLSSession) {
        let scratch = ctx.loop.outputScratch
        while true {
            let n = t.takeOutput(into: scratch)
            if n == 0 { return }
            sendRaw(one: UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
        }
    }
}
