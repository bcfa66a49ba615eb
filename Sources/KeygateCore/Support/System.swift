#if canImport(Glibc)
import Glibc
#endif

package enum System {
    package static var coreCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Writes all of `bytes` to `fd`, through short writes and EINTR. Returns how many bytes
    /// went out, and the error that stopped it (0 when all did).
    package static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> (written: Int, error: Int32) {
        var off = 0
        while off < bytes.count {
            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n > 0 {
                off += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return (off, n < 0 ? errno : EIO)
            }
        }
        return (off, 0)
    }
}
