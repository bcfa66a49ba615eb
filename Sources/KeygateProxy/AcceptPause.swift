import Dispatch
import KeygateIO

/// A listener whose accept fails (out of descriptors or memory) stops listening for 100 ms
/// instead of spinning its loop on a socket that stays readable, and says so once a second,
/// not at every retry. Touched only on the listener's loop.
final class AcceptPause: @unchecked Sendable {
    private(set) var paused = false
    private var lastWarning: Int64 = .min / 2

    /// Takes `fd` out of the loop; 100 ms later puts `handler` back with `interest`, unless
    /// `resume` says the listener is done (a drain).
    func pause(
        after error: IOError, fd: Int32, handler: EventHandler, interest: UInt32, loop: EventLoop, name: String,
        warn: @escaping @Sendable (String) -> Void, resume: @escaping @Sendable () -> Bool = { true }
    ) {
        if loop.now - lastWarning >= 1000 {
            lastWarning = loop.now
            warn("\(name)accept failed: \(error); pausing accepts for 100 ms")
        }
        paused = true
        loop.deregister(fd)
        // The closure runs on the same loop's queue, where the handler lives.
        nonisolated(unsafe) let h = handler
        loop.queue.asyncAfter(deadline: .now() + .milliseconds(100)) { [self] in
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
