import CKeygateSys
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Watches a folder for files written, renamed in or removed: inotify, read by a
/// `DispatchSourceRead` (libdispatch on Linux has no file-system object source).
public final class FolderWatch {
    private let fd: Int32
    private let source: DispatchSourceRead

    public init?(folder: String, queue: DispatchQueue, onChange: @escaping () -> Void) {
        fd = kg_watch_folder(folder)
        guard fd >= 0 else { return nil }
        let fd = self.fd
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler {
            _ = kg_drain_fd(fd)
            onChange()
        }
        // The descriptor is closed only after the source is cancelled.
        source.setCancelHandler { Sys.close(fd) }
        source.resume()
    }

    deinit { source.cancel() }
}
