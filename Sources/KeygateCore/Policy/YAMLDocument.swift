import CYAML

/// One node of a YAML document and the line it starts on. Scalars keep their text: the policy
/// validator reads each value from its text, so no tag resolution is done here.
public struct YAMLNode: Sendable {
    public enum Content: Sendable {
        case scalar(String)
        case sequence([YAMLNode])
        case mapping([(key: YAMLNode, value: YAMLNode)])
    }

    public let content: Content
    /// 1-based.
    public let line: Int

    /// The text of a scalar; nil for a list or a mapping.
    public var text: String? {
        if case .scalar(let s) = content { return s }
        return nil
    }
}

/// A problem found while reading YAML, with its 1-based line.
public struct YAMLError: Error, Sendable, Equatable {
    public let line: Int
    public let problem: String
}

/// Composes the single document of a YAML stream into `YAMLNode`s, on libyaml's event parser.
/// Aliases are replaced by the node their anchor names; a key repeated in a mapping is an error on
/// the line where it is repeated.
public enum YAMLDocument {
    /// Nesting deeper than this is refused rather than followed: composition recurses.
    static let maxDepth = 64

    /// The root node, or nil for a stream with no document (empty, or comments only).
    public static func compose(_ text: String) throws(YAMLError) -> YAMLNode? {
        // A trailing NUL that is not passed on keeps the buffer non-empty, so it has an address.
        let bytes = Array(text.utf8) + [0]
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        defer { parser.deallocate() }
        guard yaml_parser_initialize(parser) == 1 else { throw YAMLError(line: 1, problem: "YAML: out of memory") }
        defer { yaml_parser_delete(parser) }
        return try bytes.withUnsafeBufferPointer { (buffer) throws(YAMLError) -> YAMLNode? in
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count - 1)
            yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
            var composer = Composer(parser: parser)
            return try composer.document()
        }
    }
}

/// One libyaml event, copied out so that the C event can be freed at once.
private struct Event {
    var type: yaml_event_type_t
    var line: Int
    var anchor: String?
    var value: String
}

private struct Composer {
    let parser: UnsafeMutablePointer<yaml_parser_t>
    var anchors: [String: YAMLNode] = [:]

    init(parser: UnsafeMutablePointer<yaml_parser_t>) {
        self.parser = parser
    }

    mutating func document() throws(YAMLError) -> YAMLNode? {
        try expect(YAML_STREAM_START_EVENT)
        var event = try next()
        if event.type == YAML_STREAM_END_EVENT { return nil }
        guard event.type == YAML_DOCUMENT_START_EVENT else { throw YAMLError(line: event.line, problem: "YAML: expected a document") }
        event = try next()
        let root = try node(event, depth: 0)
        try expect(YAML_DOCUMENT_END_EVENT)
        event = try next()
        guard event.type == YAML_STREAM_END_EVENT else {
            throw YAMLError(line: event.line, problem: "YAML: one document is expected; a second starts here")
        }
        return root
    }

    mutating func node(_ event: Event, depth: Int) throws(YAMLError) -> YAMLNode {
        guard depth < YAMLDocument.maxDepth else {
            throw YAMLError(line: event.line, problem: "YAML: nested deeper than \(YAMLDocument.maxDepth) levels")
        }
        let built: YAMLNode
        switch event.type {
        case YAML_SCALAR_EVENT:
            built = YAMLNode(content: .scalar(event.value), line: event.line)
        case YAML_ALIAS_EVENT:
            guard let target = anchors[event.value] else { throw YAMLError(line: event.line, problem: "YAML: unknown alias *\(event.value)") }
            return target
        case YAML_SEQUENCE_START_EVENT:
            var items: [YAMLNode] = []
            while true {
                let item = try next()
                if item.type == YAML_SEQUENCE_END_EVENT { break }
                items.append(try node(item, depth: depth + 1))
            }
            built = YAMLNode(content: .sequence(items), line: event.line)
        case YAML_MAPPING_START_EVENT:
            var pairs: [(key: YAMLNode, value: YAMLNode)] = []
            var seen = Set<String>()
            while true {
                let keyEvent = try next()
                if keyEvent.type == YAML_MAPPING_END_EVENT { break }
                let key = try node(keyEvent, depth: depth + 1)
                if let text = key.text, !seen.insert(text).inserted {
                    throw YAMLError(line: key.line, problem: "duplicate field \"\(text)\"")
                }
                pairs.append((key, try node(try next(), depth: depth + 1)))
            }
            built = YAMLNode(content: .mapping(pairs), line: event.line)
        default:
            throw YAMLError(line: event.line, problem: "YAML: unexpected event")
        }
        if let anchor = event.anchor { anchors[anchor] = built }
        return built
    }

    mutating func expect(_ type: yaml_event_type_t) throws(YAMLError) {
        let event = try next()
        guard event.type == type else { throw YAMLError(line: event.line, problem: "YAML: unexpected structure") }
    }

    mutating func next() throws(YAMLError) -> Event {
        var raw = yaml_event_t()
        guard yaml_parser_parse(parser, &raw) == 1 else {
            let p = parser.pointee
            let problem = p.problem.map { String(cString: $0) } ?? "cannot be read"
            let context = p.context.map { String(cString: $0) + ": " } ?? ""
            throw YAMLError(line: Int(p.problem_mark.line) + 1, problem: "YAML: \(context)\(problem)")
        }
        defer { yaml_event_delete(&raw) }
        var event = Event(type: raw.type, line: Int(raw.start_mark.line) + 1, anchor: nil, value: "")
        switch raw.type {
        case YAML_SCALAR_EVENT:
            event.anchor = Self.string(raw.data.scalar.anchor)
            let s = raw.data.scalar
            event.value = s.value.map { String(decoding: UnsafeBufferPointer(start: $0, count: s.length), as: UTF8.self) } ?? ""
        case YAML_ALIAS_EVENT:
            event.value = Self.string(raw.data.alias.anchor) ?? ""
        case YAML_SEQUENCE_START_EVENT:
            event.anchor = Self.string(raw.data.sequence_start.anchor)
        case YAML_MAPPING_START_EVENT:
            event.anchor = Self.string(raw.data.mapping_start.anchor)
        default:
            break
        }
        return event
    }

    static func string(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        p.map { String(cString: $0) }
    }
}
