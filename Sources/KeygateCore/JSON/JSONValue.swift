import FoundationEssentials
import Glibc

/// A JSON value of any shape: for the files and answers whose fields are read one by one (state
/// files, console requests) and for the CLI's `--json`. Decoding and encoding go through
/// `JSONDecoder`/`JSONEncoder`; output has sorted keys and unescaped slashes, so it is stable.
public enum JSONValue: Codable, Equatable, Sendable {
    case string(String), number(Double), bool(Bool), array([JSONValue]), object([String: JSONValue]), null

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let n): if n == n.rounded() && abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .bool(let b): try c.encode(b)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        case .null: try c.encodeNil()
        }
    }

    /// The value `bytes` hold, or nil when they are not JSON.
    public static func parse(_ bytes: some Collection<UInt8>) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    /// The value in `bytes` when it is an object.
    public static func parseObject(_ bytes: some Collection<UInt8>) -> [String: JSONValue]? {
        parse(bytes)?.object
    }

    /// Compact JSON (or indented with `pretty`), keys sorted. nil only for a number JSON cannot
    /// hold (NaN, infinity).
    public func encoded(pretty: Bool = false) -> [UInt8]? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { [UInt8]($0) }
    }

    /// `value` encoded and decoded again: a Codable value as a tree of fields.
    public static func of(_ value: some Encodable) -> JSONValue? {
        guard let data = try? JSONEncoder().encode(value) else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// A value built of strings, numbers, booleans, arrays, `[String: Any]` dictionaries, optionals
    /// (nil is null) and `JSONValue`s, as the CLI and the console assemble their answers; nil when
    /// something else is inside.
    public static func from(_ any: Any) -> JSONValue? {
        switch any {
        case let v as JSONValue: return v
        case let s as String: return .string(s)
        case let s as Substring: return .string(String(s))
        case let b as Bool: return .bool(b)
        case let n as Int: return .number(Double(n))
        case let n as Int64: return .number(Double(n))
        case let n as Int32: return .number(Double(n))
        case let n as UInt64: return .number(Double(n))
        case let n as UInt16: return .number(Double(n))
        case let n as Double: return .number(n)
        case let a as [Any]:
            var out: [JSONValue] = []
            out.reserveCapacity(a.count)
            for item in a {
                guard let v = from(item) else { return nil }
                out.append(v)
            }
            return .array(out)
        case let o as [String: Any]:
            var out: [String: JSONValue] = [:]
            for (k, item) in o {
                guard let v = from(item) else { return nil }
                out[k] = v
            }
            return .object(out)
        default:
            let mirror = Mirror(reflecting: any)
            guard mirror.displayStyle == .optional else { return nil }
            guard let inner = mirror.children.first?.value else { return .null }
            return from(inner)
        }
    }

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var number: Double? { if case .number(let n) = self { return n } else { return nil } }
    public var array: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var object: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
    public var isNull: Bool { self == .null }

    /// A whole number within Int64, or nil.
    public var int64: Int64? {
        guard case .number(let n) = self, n == n.rounded(), abs(n) < 9.2e18 else { return nil }
        return Int64(n)
    }

    /// A list of strings, or nil when it is not a list or holds anything else.
    public var strings: [String]? {
        guard case .array(let a) = self else { return nil }
        var out: [String] = []
        for v in a {
            guard case .string(let s) = v else { return nil }
            out.append(s)
        }
        return out
    }

    public init(_ s: String) { self = .string(s) }
    public init(_ n: Int) { self = .number(Double(n)) }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last })) }
}

extension JSONValue {
    /// A value in a few characters, for tables, CSV and history lines.
    public static func short(_ v: JSONValue?) -> String {
        switch v {
        case nil, .null?: return "-"
        case .string(let s)?: return s
        case .number(let n)?: return n == n.rounded() && abs(n) < 9e15 ? String(Int64(n)) : String(n)
        case .bool(let b)?: return String(b)
        case .array(let a)?: return "[" + a.map { short($0) }.joined(separator: ",") + "]"
        case .object(let o)?: return "{" + o.keys.sorted().map { "\($0):\(short(o[$0]))" }.joined(separator: ",") + "}"
        }
    }
}
