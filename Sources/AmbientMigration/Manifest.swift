internal import BoundedYAML
internal import Foundation
internal import Yams

/// Which object a finding or a generated manifest is about: `kind namespace/name`.
public struct ResourceID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public var kind: String
    /// Empty for cluster-scoped kinds (Namespace).
    public var namespace: String
    public var name: String

    public init(kind: String, namespace: String, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    public var description: String {
        self.namespace.isEmpty ? "\(self.kind) \(self.name)" : "\(self.kind) \(self.namespace)/\(self.name)"
    }

    public static func < (lhs: ResourceID, rhs: ResourceID) -> Bool {
        (lhs.namespace, lhs.kind, lhs.name) < (rhs.namespace, rhs.kind, rhs.name)
    }
}

/// Where an object was read: the file and the line its document (or `List` item) starts on.
public struct SourceLocation: Hashable, Sendable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int?

    public init(file: String, line: Int?) {
        self.file = file
        self.line = line
    }

    public var description: String { self.line.map { "\(self.file):\($0)" } ?? self.file }
}

/// A Kubernetes object read from a manifest.
public struct Manifest: Hashable, Sendable {
    /// `group/version`, or `v1` for the core group.
    public var apiVersion: String
    public var kind: String
    public var name: String
    /// As written; `nil` when the manifest leaves it to `kubectl apply -n`.
    public var declaredNamespace: String?
    /// The namespace the analysis uses: the declared one, else the configured default.
    public var namespace: String
    public var labels: [String: String]
    /// The whole object.
    public var body: YAMLValue
    public var location: SourceLocation

    /// The API group: `security.istio.io` for `security.istio.io/v1`, empty for `v1`.
    public var group: String {
        guard let slash = self.apiVersion.firstIndex(of: "/") else { return "" }
        return String(self.apiVersion[..<slash])
    }

    public var id: ResourceID {
        ResourceID(kind: self.kind, namespace: self.kind == "Namespace" ? "" : self.namespace, name: self.name)
    }

    /// `spec`, or null.
    public var spec: YAMLValue { self.body["spec"] ?? .null }
}

/// Objects read from files, with what could not be read.
public struct ManifestSet: Sendable {
    public var manifests: [Manifest] = []
    public var diagnostics: [Diagnostic] = []

    public init(manifests: [Manifest] = [], diagnostics: [Diagnostic] = []) {
        self.manifests = manifests
        self.diagnostics = diagnostics
    }
}

/// Reads Kubernetes manifests: multi-document YAML (or JSON) files, `kubectl get … -o yaml`
/// dumps and their `List` kinds, from files or directory trees.
///
/// Input problems never stop the run: a file that is not YAML, a document that is not an
/// object, an object without `kind` or `metadata.name` each become an error
/// ``Diagnostic`` with the file and line, and the rest is still read.
public enum ManifestLoader {
    /// File name extensions read when walking a directory.
    public static let extensions: Set<String> = ["yaml", "yml", "json"]

    /// Reads every manifest file under `paths` (files are read whatever their extension),
    /// in path order so results repeat.
    /// - Parameter defaultNamespace: used for namespaced objects that declare none, as
    ///   `kubectl apply` would (with a warning each).
    public static func load(paths: [String], defaultNamespace: String = "default") -> ManifestSet {
        var set = ManifestSet()
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                set.diagnostics.append(Diagnostic(.error, location: SourceLocation(file: path, line: nil), "no such file or directory"))
                continue
            }
            let files = isDirectory.boolValue ? Self.manifestFiles(under: path) : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                    set.diagnostics.append(Diagnostic(.error, location: SourceLocation(file: file, line: nil), "cannot read the file as UTF-8 text"))
                    continue
                }
                let parsed = Self.parse(text, file: file, defaultNamespace: defaultNamespace)
                set.manifests += parsed.manifests
                set.diagnostics += parsed.diagnostics
            }
        }
        return set
    }

    static func manifestFiles(under directory: String) -> [String] {
        let root = URL(fileURLWithPath: directory)
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var files: [String] = []
        // Paths are reported under the directory as the user gave it, not resolved.
        let rootPath = root.standardizedFileURL.path
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        for case let url as URL in walker where Self.extensions.contains(url.pathExtension.lowercased()) {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true else { continue }
            let path = url.standardizedFileURL.path
            files.append(path.hasPrefix(rootPath + "/") ? prefix + path.dropFirst(rootPath.count + 1) : path)
        }
        return files.sorted()
    }

    /// The most values (scalars, sequences, mappings) a file may have once its YAML aliases
    /// are expanded, unless the text itself is longer in bytes; aliases inside mapping keys
    /// and nesting past 1 000 levels are refused too (`BoundedYAML`).
    public static let maximumValues = BoundedYAML.maximumValues

    /// Reads the objects of one file's text.
    public static func parse(_ text: String, file: String, defaultNamespace: String = "default") -> ManifestSet {
        var set = ManifestSet()
        // Kubernetes' decoder limits how far aliases may expand a document (CVE-2019-11253);
        // so does this reader, over the whole file (BoundedYAML).
        let (documents, stop) = BoundedYAML.composeAll(text)
        for (index, node) in documents.enumerated() {
            let location = SourceLocation(file: file, line: node.mark?.line)
            Self.add(YAMLValue(node: node), at: location, document: index + 1, to: &set, defaultNamespace: defaultNamespace)
        }
        switch stop {
        case .invalid(let error)?:
            set.diagnostics.append(Self.yamlDiagnostic(error, file: file))
        case .refused(_, let line, let reason)?:
            set.diagnostics.append(Diagnostic(.error, location: SourceLocation(file: file, line: line), "\(reason): it and the rest of the file are not read"))
        case nil:
            break
        }
        return set
    }

    private static func add(_ value: YAMLValue, at location: SourceLocation, document: Int, to set: inout ManifestSet, defaultNamespace: String) {
        if value == .null { return }  // an empty document (`---` at the end)
        guard value.entries != nil else {
            set.diagnostics.append(Diagnostic(.error, location: location, "document \(document) is not a Kubernetes object (a mapping with apiVersion and kind)"))
            return
        }
        guard let kind = value["kind"]?.string, !kind.isEmpty, let apiVersion = value["apiVersion"]?.string, !apiVersion.isEmpty else {
            set.diagnostics.append(Diagnostic(.error, location: location, "document \(document) has no kind or apiVersion: not a Kubernetes object"))
            return
        }
        if kind == "List" || (kind.hasSuffix("List") && value["items"]?.items != nil) {
            for item in value["items"]?.items ?? [] {
                Self.add(item, at: location, document: document, to: &set, defaultNamespace: defaultNamespace)
            }
            return
        }
        let metadata = value["metadata"] ?? .null
        guard let name = metadata["name"]?.scalarText, !name.isEmpty else {
            set.diagnostics.append(Diagnostic(.error, location: location, "\(kind) in document \(document) has no metadata.name"))
            return
        }
        let declared = metadata["namespace"]?.scalarText
        let manifest = Manifest(
            apiVersion: apiVersion, kind: kind, name: name, declaredNamespace: declared,
            namespace: declared ?? (kind == "Namespace" ? name : defaultNamespace),
            labels: metadata["labels"]?.stringMap ?? [:], body: value, location: location
        )
        if declared == nil, !Self.clusterScopedKinds.contains(kind) {
            set.diagnostics.append(Diagnostic(
                .warning, resource: manifest.id, location: location,
                "no metadata.namespace: assumed \"\(defaultNamespace)\" (set --default-namespace if these manifests are applied with -n)"
            ))
        }
        set.manifests.append(manifest)
    }

    static let clusterScopedKinds: Set<String> = ["Namespace", "GatewayClass", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Node"]

    private static func yamlDiagnostic(_ error: any Error, file: String) -> Diagnostic {
        if let yaml = error as? YamlError {
            switch yaml {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                return Diagnostic(.error, location: SourceLocation(file: file, line: mark.line), "invalid YAML at line \(mark.line), column \(mark.column): \(problem)")
            case .duplicatedKeysInMapping(let duplicates, let context):
                return Diagnostic(.error, location: SourceLocation(file: file, line: context.mark.line), "invalid YAML at line \(context.mark.line): duplicated keys \(duplicates.joined(separator: ", "))")
            default:
                break
            }
        }
        return Diagnostic(.error, location: SourceLocation(file: file, line: nil), "invalid YAML: \(error)")
    }
}
