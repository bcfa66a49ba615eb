extension StringProtocol {
    /// The text without leading and trailing characters that `drop` picks (white space by default).
    public func trimmed(_ drop: (Character) -> Bool = { $0.isWhitespace }) -> String {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return "" }
        return String(self[first...last])
    }
}

extension Unicode.Scalar {
    /// C0 and C1 controls, DEL, and the Unicode line and paragraph separators: what must not
    /// reach a terminal or a log line from text others wrote (some viewers break lines at the
    /// separators too).
    public var isControlOrLineBreak: Bool {
        value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x2028 || value == 0x2029
    }
}

extension StringProtocol {
    public var hasControlOrLineBreak: Bool { unicodeScalars.contains(where: \.isControlOrLineBreak) }
}
