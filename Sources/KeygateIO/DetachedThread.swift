import CKeygateSys
import Glibc

/// A plain detached thread, for work that blocks (a Redis client, the demo upstream) and so must
/// not run on an event loop or on Dispatch's shared pool.
public enum DetachedThread {
    final class Box {
        let name: String?
        let body: () -> Void
        init(name: String?, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread; `name` (its first 15 bytes) shows in `top -H` and `ps -L`.
    public static func start(name: String? = nil, _ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        defer { pthread_attr_destroy(&attributes) }
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            if let name = box.name { kg_set_thread_name(name) }
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            fatalError("cannot start a thread: \(String(cString: strerror(rc)))")
        }
    }
}
