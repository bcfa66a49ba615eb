/// Why a message was refused, and the status that answers it.
///
/// `status == 0` means "close without answering" (an HTTP/0.9 request line has no way to read
/// an HTTP/1.1 answer).
public struct HTTPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public let status: Int
    public let reason: String

    public init(_ status: Int, _ reason: String) {
        self.status = status
        self.reason = reason
    }

    public var description: String { "\(status) \(reason)" }

    static func bad(_ reason: String) -> HTTPParseError { HTTPParseError(400, reason) }
    static let bareLF = bad("bare LF in message framing")
    static let bareCR = bad("bare CR in message framing")
    static let headerTooLarge = HTTPParseError(431, "request header fields too large")
    static let tooManyFields = HTTPParseError(431, "too many header fields")
    static let uriTooLong = HTTPParseError(414, "request target too long")
}
