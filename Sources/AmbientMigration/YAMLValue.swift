internal import Yams

/// A YAML node as plain values, mapping keys kept in document order, so a manifest can be
/// read field by field and written back in the order a person wrote it.
///
/// Scalars are typed by YAML 1.1 core-schema resolution as Kubernetes reads them (`8080`
/// is an integer, `"8080"` a string, `true` a boolean); anchors and aliases are resolved
/// by the parser.
public enum YAMLValue: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case sequence([YAMLValue])
    case mapping([Entry])

    /// One `key: value` pair of a mapping.
    public struct Entry: Hashable, Sendable {
        public var key: String
        public var value: YAMLValue

        public init(_ key: String, _ value: YAMLValue) {
            self.key = key
            self.value = value
        }
    }

    // MARK: Reading

    /// The value under `key` of a mapping; `nil` for a missing key or a non-mapping.
    public subscript(key: String) -> YAMLValue? {
        guard case .mapping(let entries) = self else { return nil }
        return entries.first { $0.key == key }?.value
    }

    /// The mapping's entries, or `nil` if this is not a mapping.
    public var entries: [Entry]? {
        if case .mapping(let entries) = self { return entries }
        return nil
    }

    /// The sequence's items, or `nil` if this is not a sequence.
    public var items: [YAMLValue]? {
        if case .sequence(let items) = self { return items }
        return nil
    }

    /// A string scalar.
    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// An integer, also from a string of digits (`port: "8080"`).
    public var int: Int? {
        switch self {
        case .int(let value): return value
        case .string(let text): return Int(text)
        default: return nil
        }
    }

    /// A scalar as the text it stands for (`version: 1` is `"1"`), `nil` for collections and null.
    public var scalarText: String? {
        switch self {
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .string(let value): return value
        case .null, .sequence, .mapping: return nil
        }
    }

    /// A mapping of scalars as `[String: String]` (labels, selectors); `nil` for anything else.
    public var stringMap: [String: String]? {
        guard let entries else { return nil }
        var map: [String: String] = [:]
        for entry in entries {
            guard let text = entry.value.scalarText else { return nil }
            map[entry.key] = text
        }
        return map
    }

    /// The scalars of a sequence as text; empty when absent or not a sequence.
    public var textList: [String] {
        self.items?.compactMap(\.scalarText) ?? []
    }

    /// Whether this is null, an empty mapping or an empty sequence.
    public var isEmpty: Bool {
        switch self {
        case .null: return true
        case .mapping(let entries): return entries.isEmpty
        case .sequence(let items): return items.isEmpty
        default: return false
        }
    }

    // MARK: Building

    /// A mapping from pairs, in the order given; `nil` values are left out.
    public static func object(_ pairs: KeyValuePairs<String, YAMLValue?>) -> YAMLValue {
        .mapping(pairs.compactMap { key, value in value.map { Entry(key, $0) } })
    }

    /// A mapping of strings, sorted by key (labels, selectors).
    public static func labels(_ map: [String: String]) -> YAMLValue {
        .mapping(map.sorted { $0.key < $1.key }.map { Entry($0.key, .string($0.value)) })
    }
}

// MARK: - Yams bridge

extension YAMLValue {
    init(node: Node) {
        switch node {
        case .scalar(let scalar):
            self = Self.scalar(node: node, text: scalar.string)
        case .sequence(let sequence):
            self = .sequence(sequence.map(YAMLValue.init(node:)))
        case .mapping(let mapping):
            self = .mapping(mapping.map { key, value in
                Entry(key.string ?? YAMLValue(node: key).scalarText ?? "", YAMLValue(node: value))
            })
        case .alias:
            self = .null
        }
    }

    private static func scalar(node: Node, text: String) -> YAMLValue {
        switch node.tag.rawValue {
        case Tag.Name.null.rawValue: return .null
        case Tag.Name.bool.rawValue: return node.bool.map(YAMLValue.bool) ?? .string(text)
        case Tag.Name.int.rawValue: return node.int.map(YAMLValue.int) ?? .string(text)
        case Tag.Name.float.rawValue: return node.float.map(YAMLValue.double) ?? .string(text)
        default: return .string(text)
        }
    }

    var node: Node {
        switch self {
        case .null: return Node("null", Tag(.null))
        case .bool(let value): return Node(value ? "true" : "false", Tag(.bool))
        case .int(let value): return Node(String(value), Tag(.int))
        case .double(let value): return Node(String(value), Tag(.float))
        case .string(let value):
            // A string that would read back as another type (`"8080"`, `""`, `"true"`) is quoted,
            // and so are `y`/`n`, which go-yaml v2 (kubectl, the API server) reads as booleans.
            let plain = Resolver.default.resolveTag(of: Node(value)) == .str && !Self.goYAMLBooleans.contains(value)
            let style: Node.Scalar.Style = plain ? .any : .doubleQuoted
            return .scalar(Node.Scalar(value, Tag(.str), style))
        case .sequence(let items):
            return Node(items.map(\.node), Tag(.seq), .block)
        case .mapping(let entries):
            return Node(entries.map { (Node($0.key, Tag(.str)), $0.value.node) }, Tag(.map), .block)
        }
    }

    /// Booleans of YAML 1.1 as go-yaml v2 resolves them, beyond what Yams resolves.
    static let goYAMLBooleans: Set<String> = ["y", "Y", "n", "N"]

    /// The value as a YAML document (block style, keys in order).
    public func yamlText() -> String {
        (try? Yams.serialize(node: self.node, indent: 2, width: -1)) ?? ""
    }
}
