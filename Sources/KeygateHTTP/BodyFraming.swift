/// How a message body is delimited on the wire.
public enum BodyFraming: Sendable, Equatable {
    case none
    case contentLength(UInt64)
    case chunked
    /// Response bodies only: delimited by the upstream closing the connection.
    case untilClose
}

public enum HTTPVersion: Sendable, Equatable {
    case http10
    case http11
}
