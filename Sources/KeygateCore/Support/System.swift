#if canImport(Glibc)
import Glibc
#endif

package enum System {
    package static var coreCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}
