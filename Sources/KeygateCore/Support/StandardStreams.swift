import Glibc

/// Standard input, output and error without buffering: each text is written whole, at once, so
/// it is out even if the process is stopped next.
public enum StandardStreams {
    public static func writeError(_ text: String) { write(2, text) }
    public static func writeOutput(_ text: String) { write(1, text) }

    /// All of standard input, up to its end.
    public static func readInput() -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { _ = System.writeAll(fd, UnsafeRawBufferPointer($0)) }
    }
}
