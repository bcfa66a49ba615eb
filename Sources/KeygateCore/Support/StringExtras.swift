extension StringProtocol {
    /// The text without leading and trailing characters that `drop` picks (white space by default).
    public func trimmed(_ drop: (Character) -> Bool = { $0.isWhitespace }) -> String {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return "" }
        return String(self[first...last])
    }
}
