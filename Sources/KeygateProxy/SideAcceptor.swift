import Dispatch
import Glibc
import KeygateIO

/// Accepting on the operators' listeners (admin, console). At most `cap` connections are open
/// at once and more are closed as they arrive, so a flood on one of these ports cannot take the
/// descriptors the proxy needs. When accept fails (out of descriptors), the listener stops for
/// 100 ms instead of spinning its loop on a socket that stays readable. Touched only on its
/// listener's loop.
final class SideAcceptor: @unchecked Sendable {
    let fd: Int32
    let cap: Int
    let name: String
    let warn: (String) -> Void
    private var paused = false
    /// Failures are reported once a second, not at every retry.
    private var lastWarning: Int64 = .min / 2

    init(fd: Int32, cap: Int, name: String, warn: @escaping (String) -> Void) {
        self.fd = fd
        self.cap = cap
        self.name = name
        self.warn = warn
    }

    /// Accepts what is waiting. `open` is how many connections are open now; `take` registers
    /// one and says whether it is now open.
    func accept(loop: EventLoop, handler: EventHandler, open: Int, take: (Int32, sockaddr_storage) -> Bool) {
        if paused { return }
        var open = open
        while true {
            var addr = sockaddr_storage()
            let c: Int32
            do {
                guard let accepted = try Sys.accept(fd, &addr) else { return }
                c = accepted
            } catch {
                if loop.now - lastWarning >= 1000 {
                    lastWarning = loop.now
                    warn("\(name): accept failed: \(error); pausing accepts for 100 ms")
                }
                pause(loop, handler)
                return
            }
            if open >= cap {
                Sys.close(c)
                continue
            }
            if take(c, addr) { open += 1 }
        }
    }

    private func pause(_ loop: EventLoop, _ handler: EventHandler) {
        paused = true
        loop.deregister(fd)
        // The closure runs on the same loop's queue, where the handler lives.
        nonisolated(unsafe) let h = handler
        loop.queue.asyncAfter(deadline: .now() + .milliseconds(100)) { [self] in
            paused = false
            do {
                try loop.register(fd, h, interest: Events.readable)
            } catch {
                warn("\(name): cannot listen again: \(error)")
            }
        }
    }
}
