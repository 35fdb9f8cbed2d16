package import Yams

/// Yams' composition with YAML aliases bounded, for the readers of files from outside:
/// ztunnel's local config (MeshState) and Kubernetes manifests (AmbientMigration).
///
/// Yams resolves an alias to its anchor's node, so a document of a few KiB can compose to
/// an exponential tree ("billion laughs"). ztunnel's reader (serde_yaml) and Kubernetes'
/// (go-yaml, CVE-2019-11253) refuse such documents; so does this one, in two places:
///
/// - **Keys.** Yams checks each mapping's keys for duplicates by hashing them while it
///   composes, and hashing walks an aliased key's whole expansion, before any limit could
///   look at the tree. So the keys are checked first, on a copy of the text in which no
///   alias can exist: every `*` (the alias indicator) becomes U+E000, which turns each
///   alias into a plain scalar in the same place, and the copy composes in linear time. A
///   document with a plain scalar that starts with U+E000 inside a mapping key had an
///   alias there, and is refused. No reader here accepts anything but strings as keys.
/// - **Values.** Each composed document is walked without recursion, counting its values
///   with aliases expanded, and refused past a million values for the file (or its length
///   in bytes, if longer: without aliases a document has about as many values as bytes at
///   most) or past 1 000 levels of nesting (libyaml's own limit for the text), so that the
///   readers' recursive walks stay within their stacks.
package enum BoundedYAML {
    /// The most values a file may expand to through aliases, unless it is longer in bytes.
    package static let maximumValues = 1_000_000
    /// The deepest nesting a document may expand to through aliases.
    package static let maximumDepth = 1_000

    /// Why the reading stopped before the end of the file.
    package enum Stop: Error, CustomStringConvertible {
        /// Not YAML (Yams' error).
        case invalid(any Error)
        /// Refused by the limits above: the 1-based document, its line, and why.
        case refused(document: Int, line: Int?, reason: String)

        package var description: String {
            switch self {
            case .invalid(let error): "\(error)"
            case .refused(_, _, let reason): reason
            }
        }
    }

    /// The documents of `text`, composed, up to the first that is not YAML or is refused.
    package static func composeAll(_ text: String) -> (documents: [Node], stop: Stop?) {
        let limit = max(Self.maximumValues, text.utf8.count)
        var documents: [Node] = []
        let keyProblem = Self.firstAliasInKey(text)
        do {
            let parser = try Parser(yaml: text)
            var remaining = limit
            while true {
                if let keyProblem, keyProblem.document == documents.count + 1 { return (documents, keyProblem.stop) }
                guard let node = try parser.nextRoot() else { return (documents, nil) }
                let document = documents.count + 1
                switch node.expandedSize(upTo: remaining) {
                case .values(let count):
                    remaining -= count
                    documents.append(node)
                case .tooMany:
                    return (documents, .refused(document: document, line: node.mark?.line,
                                                reason: "YAML aliases expand the file to more than \(limit) values at document \(document)"))
                case .tooDeep:
                    return (documents, .refused(document: document, line: node.mark?.line,
                                                reason: "YAML aliases nest document \(document) deeper than \(Self.maximumDepth) levels"))
                }
            }
        } catch {
            return (documents, .invalid(error))
        }
    }

    /// The first document of `text` with an alias inside a mapping key (checked on the copy
    /// described above), or the copy's own YAML error, which is the text's.
    static func firstAliasInKey(_ text: String) -> (document: Int, stop: Stop)? {
        guard text.utf8.contains(UInt8(ascii: "*")) else { return nil }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: text.unicodeScalars.lazy.map { $0 == "*" ? Self.marker : $0 })
        var document = 0
        do {
            let parser = try Parser(yaml: String(scalars))
            while let node = try parser.nextRoot() {
                document += 1
                if let key = node.firstKeyHoldingAlias() {
                    let line = key.mark?.line
                    return (document, .refused(document: document, line: line,
                                               reason: "an alias inside a mapping key at line \(line.map(String.init) ?? "?") of document \(document)"))
                }
            }
        } catch {
            return (document + 1, .invalid(error))
        }
        return nil
    }

    /// What an alias becomes in the copy: a private-use character, which may start a plain
    /// scalar where `*` may not.
    static let marker: Unicode.Scalar = "\u{E000}"
}

extension Node {
    /// How many values this tree has with its aliases expanded.
    enum ExpandedSize {
        case values(Int)
        case tooMany
        case tooDeep
    }

    /// Counts without recursion, and stops at `limit` values or ``BoundedYAML/maximumDepth``.
    ///
    /// Children are reached by index: `Node.Mapping`'s iterator copies its pairs into a new
    /// array, one allocation per mapping, which showed in the load benchmark's malloc count.
    func expandedSize(upTo limit: Int) -> ExpandedSize {
        var count = 0
        var pending: [(node: Node, depth: Int)] = []
        pending.reserveCapacity(64)
        pending.append((self, 1))
        while let (node, depth) = pending.popLast() {
            count += 1
            if count > limit { return .tooMany }
            if depth > BoundedYAML.maximumDepth { return .tooDeep }
            switch node {
            case .scalar, .alias: break
            case .sequence(let items):
                for index in items.indices { pending.append((items[index], depth + 1)) }
            case .mapping(let pairs):
                for index in pairs.indices {
                    let (key, value) = pairs[index]
                    pending.append((key, depth + 1))
                    pending.append((value, depth + 1))
                }
            }
        }
        return .values(count)
    }

    /// In the alias-free copy: the first mapping key (outermost) that holds a plain scalar
    /// starting with the marker, which was an alias in the text.
    func firstKeyHoldingAlias() -> Node? {
        var pending: [(node: Node, inKey: Node?)] = [(self, nil)]
        while let (node, key) = pending.popLast() {
            switch node {
            case .scalar(let scalar):
                if let key, scalar.style == .plain, scalar.string.unicodeScalars.first == BoundedYAML.marker {
                    return key
                }
            case .alias: break
            case .sequence(let items):
                for index in items.indices { pending.append((items[index], key)) }
            case .mapping(let pairs):
                for index in pairs.indices {
                    let (entryKey, value) = pairs[index]
                    pending.append((entryKey, key ?? entryKey))
                    pending.append((value, key))
                }
            }
        }
        return nil
    }
}
