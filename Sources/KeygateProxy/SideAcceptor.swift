import Glibc
import KeygateIO

/// Accepting on the operators' listeners (admin, console). At most `cap` connections are open
/// at once and more are closed as they arrive, so a flood on one of these ports cannot take the
/// descriptors the proxy needs. A failing accept pauses the listener (`AcceptPause`). Touched
/// only on its listener's loop.
final class SideAcceptor: @unchecked Sendable {
    let fd: Int32
    let cap: Int
    let name: String
    let warn: @Sendable (String) -> Void
    private let pause = AcceptPause()

    init(fd: Int32, cap: Int, name: String, warn: @escaping @Sendable (String) -> Void) {
        self.fd = fd
        self.cap = cap
        self.name = name
        self.warn = warn
    }

    /// Accepts what is waiting. `open` is how many connections are open now; `take` registers
    /// one and says whether it is now open.
    func accept(loop: EventLoop, handler: EventHandler, open: Int, take: (Int32, sockaddr_storage) -> Bool) {
        if pause.paused { return }
        var open = open
        while true {
            var addr = sockaddr_storage()
            let c: Int32
            do {
                guard let accepted = try Sys.accept(fd, &addr) else { return }
                c = accepted
            } catch {
                pause.pause(after: error, fd: fd, handler: handler, interest: Events.readable, loop: loop, name: "\(name): ", warn: warn)
                return
            }
            if open >= cap {
                Sys.close(c)
                continue
            }
            if take(c, addr) { open += 1 }
        }
    }
}
