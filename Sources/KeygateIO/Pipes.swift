import CKeygateSys
#if canImport(Glibc)
import Glibc
#endif

/// A pipe that carries a tunnel's bytes from one socket to another with `splice`: the kernel
/// moves the pages, so a large message is never copied into the gate and out again.
public final class SplicePipe {
    public let readEnd: Int32
    public let writeEnd: Int32
    /// How many bytes it holds at most, so a splice never asks for more.
    public let capacity: Int

    init?(size: Int) {
        var fds: [Int32] = [-1, -1]
        let capacity = kg_pipe(&fds, Int32(size))
        guard capacity > 0 else { return nil }
        readEnd = fds[0]
        writeEnd = fds[1]
        self.capacity = Int(capacity)
    }

    deinit {
        Sys.close(readEnd)
        Sys.close(writeEnd)
    }
}

/// A loop's empty pipes. A splice borrows one and gives it back once the pipe is empty again,
/// so a few pipes serve all of a loop's tunnels; one that still holds bytes (its socket was
/// full) stays with that socket's output until sent, then is closed.
public final class PipePool {
    private var idle: [SplicePipe] = []
    private let size: Int
    private let keep: Int

    public init(size: Int = 256 << 10, keep: Int = 4) {
        self.size = size
        self.keep = keep
    }

    /// An empty pipe, or nil when none can be made (out of descriptors): the caller reads instead.
    public func take() -> SplicePipe? {
        idle.popLast() ?? SplicePipe(size: size)
    }

    /// What `fill` did.
    public enum Filled {
        /// `count` bytes wait in `pipe`, which the caller now holds.
        case moved(SplicePipe, count: Int)
        case nothingReady
        case endOfStream
        case failed(IOError)
        /// No pipe could be had: the caller reads into its buffer instead.
        case noPipe
    }

    /// Splices at most `limit` bytes from socket `fd` into a pipe of the pool; a pipe left empty
    /// is given back at once.
    public func fill(from fd: Int32, atMost limit: Int) -> Filled {
        guard let pipe = take() else { return .noPipe }
        do {
            switch try Sys.splice(fd, to: pipe.writeEnd, min(limit, pipe.capacity)) {
            case .done(0):
                give(pipe)
                return .endOfStream
            case .done(let n):
                return .moved(pipe, count: n)
            case .wouldBlock:
                give(pipe)
                return .nothingReady
            }
        } catch {
            give(pipe)
            return .failed(error)
        }
    }

    /// Takes back a pipe that is empty.
    public func give(_ pipe: SplicePipe) {
        if idle.count < keep { idle.append(pipe) }
    }
}
