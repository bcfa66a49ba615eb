/// The largest values keygate accepts for numbers that come from files, flags or the network.
/// Each is far above any real use and far below where arithmetic on it could overflow: the
/// limiter multiplies an emission interval (up to 3.6e12 ns for 1/h) by a burst, quota counts
/// live in 40 bits, and times are formatted as four-digit years.
public enum Bounds {
    /// Requests per second, minute or hour in a rate.
    public static let rateCount = 1_000_000_000
    /// Requests a rate may burst: 3.6e12 ns × 1e6 stays below Int64.max.
    public static let burst = 1_000_000
    /// Requests per day or month in a quota (the limiter keeps counts in 40 bits).
    public static let quotaCount = 1_000_000_000_000
    /// Any duration a user gives (TTL, grace, timeouts): 100 years.
    public static let durationMillis: Int64 = 100 * 366 * 86_400_000
    /// Timeouts in the policy: a week.
    public static let timeoutMillis: Int64 = 7 * 86_400_000
    /// Gates sharing one key set.
    public static let replicas = 1000
    public static let headerBytes = 1 << 20
    public static let headers = 10_000
    public static let bodyBytes = 1 << 50
    public static let connections = 10_000_000
    public static let requestsPerConnection = 1_000_000_000
    /// Bytes per second.
    public static let bodyRate = 1_000_000_000
    /// A request body held in memory before the upstream is contacted.
    public static let requestBuffer = 16 << 20
}
