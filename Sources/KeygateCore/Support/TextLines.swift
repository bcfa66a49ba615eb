/// Walks the non-blank lines of a text buffer, trimmed of spaces, tabs and CR, with their
/// 1-based numbers; stops when `body` returns false. The key store and the state files share it.
public enum TextLines {
    public static func forEach(_ p: UnsafeBufferPointer<UInt8>, _ body: (Int, Range<Int>) -> Bool) {
        var start = 0
        var number = 0
        while start < p.count {
            var end = start
            while end < p.count, p[end] != 0x0A { end += 1 }
            number += 1
            var s = start
            var e = end
            while s < e, p[s] == 0x20 || p[s] == 0x09 || p[s] == 0x0D { s += 1 }
            while e > s, p[e - 1] == 0x20 || p[e - 1] == 0x09 || p[e - 1] == 0x0D { e -= 1 }
            start = end + 1
            if s < e && !body(number, s..<e) { return }
        }
    }
}
