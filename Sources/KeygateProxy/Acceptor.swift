import Dispatch
import Glibc
import KeygateIO

/// Accepting on a listening socket: the proxy's listener and the operators' (admin, console).
/// - At most `cap` connections are open at once; more are closed as they arrive, so a flood on
///   an operator's port cannot take the descriptors the proxy needs.
/// - At most `perWake` are taken per wake-up, so a burst on one loop leaves the others theirs.
/// - When accept fails (out of descriptors or memory), the socket leaves the loop for 100 ms
///   instead of spinning it on a socket that stays readable, and that is logged once a second.
/// Touched only on its loop.
final class Acceptor: @unchecked Sendable {
    let fd: Int32
    let interest: UInt32
    let cap: Int
    let perWake: Int
    /// Starts the messages: "" for the proxy's listener, "admin_listen: " for the admin one.
    let name: String
    let warn: @Sendable (String) -> Void
    /// Whether to listen again after a pause (not during a drain).
    let resume: @Sendable () -> Bool
    private(set) var paused = false
    private var lastWarning: Int64 = .min / 2

    init(
        fd: Int32, interest: UInt32 = Events.readable, cap: Int = .max, perWake: Int = .max, name: String,
        warn: @escaping @Sendable (String) -> Void, resume: @escaping @Sendable () -> Bool = { true }
    ) {
        self.fd = fd
        self.interest = interest
        self.cap = cap
        self.perWake = perWake
        self.name = name
        self.warn = warn
        self.resume = resume
    }

    /// Accepts what is waiting. `open` is how many connections are open now; `take` sets one
    /// up and says whether it is now open.
    func accept(loop: EventLoop, handler: EventHandler, open: Int = 0, take: (Int32, sockaddr_storage) -> Bool) {
        if paused { return }
        var open = open
        for _ in 0..<perWake {
            var addr = sockaddr_storage()
            let c: Int32
            do {
                guard let accepted = try Sys.accept(fd, &addr) else { return }
                c = accepted
            } catch {
                pause(after: error, loop: loop, handler: handler)
                return
            }
            if open >= cap {
                Sys.close(c)
                continue
            }
            if take(c, addr) { open += 1 }
        }
    }

    private func pause(after error: IOError, loop: EventLoop, handler: EventHandler) {
        if loop.now - lastWarning >= 1000 {
            lastWarning = loop.now
            warn("\(name)accept failed: \(error); pausing accepts for 100 ms")
        }
        paused = true
        loop.deregister(fd)
        // Back on the same loop's queue, where the handler lives, through `execute` so that a
        // loop holding its queue for busy tunnels hands it over.
        nonisolated(unsafe) let h = handler
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { [self] in
            loop.execute { [self] in
                paused = false
                guard resume() else { return }
                do {
                    try loop.register(fd, h, interest: interest)
                } catch {
                    warn("\(name)cannot listen again: \(error)")
                }
            }
        }
    }
}
