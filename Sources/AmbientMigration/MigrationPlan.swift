/// What to do, in order: waypoints to deploy, namespace labels, generated manifests and
/// the commands that apply them.
public struct MigrationPlan: Sendable, Codable {
    /// A waypoint to deploy (an `istio-waypoint` Gateway; its Deployment and ServiceAccount
    /// are named after it).
    public struct Waypoint: Hashable, Sendable, Codable {
        /// Namespace waypoint (the namespace carries `istio.io/use-waypoint`) or per-service
        /// (only the listed Services carry it).
        public enum Scope: String, Hashable, Sendable, Codable { case namespace, service }

        public var namespace: String
        public var name: String
        public var scope: Scope
        /// The Services that need it (names in `namespace`).
        public var services: [String]
        public var reason: String
        /// Whether the input already has it (then nothing is deployed).
        public var existing: Bool
        /// Services behind it that ingress routes send to: they need
        /// `istio.io/ingress-use-waypoint=true`, or ingress traffic skips the waypoint.
        public var ingressServices: [String] = []
    }

    /// Labels to change on a namespace that moves to ambient.
    public struct NamespaceChange: Hashable, Sendable, Codable {
        public var namespace: String
        public var add: [String: String]
        public var remove: [String]
    }

    /// One step of the migration.
    public struct Step: Hashable, Sendable, Codable {
        public var title: String
        public var commands: [String]
        public var notes: [String]
    }

    /// A manifest the tool wrote.
    public struct GeneratedManifest: Hashable, Sendable, Codable {
        public var resource: ResourceID
        /// What it replaces or why it exists.
        public var purpose: String
        /// The resource it was derived from.
        public var source: ResourceID?
        /// Path under `--emit DIR`.
        public var path: String
        public var yaml: String
    }

    /// A resource that needs a waypoint but cannot be rewritten automatically.
    public struct ManualItem: Hashable, Sendable, Codable {
        public var resource: ResourceID
        public var reasons: [String]
    }

    public var waypoints: [Waypoint] = []
    public var namespaces: [NamespaceChange] = []
    public var generated: [GeneratedManifest] = []
    public var manual: [ManualItem] = []
    public var steps: [Step] = []

    public init() {}

    /// The generated manifest for a resource.
    public func generated(_ kind: String, _ namespace: String, _ name: String) -> GeneratedManifest? {
        self.generated.first { $0.resource == ResourceID(kind: kind, namespace: namespace, name: name) }
    }
}

extension MigrationPlan.GeneratedManifest {
    init(_ value: YAMLValue, purpose: String, source: ResourceID?) {
        let kind = value["kind"]?.string ?? "?"
        let namespace = value["metadata"]?["namespace"]?.string ?? ""
        let name = value["metadata"]?["name"]?.string ?? "?"
        self.init(
            resource: ResourceID(kind: kind, namespace: namespace, name: name), purpose: purpose, source: source,
            path: "\(namespace.isEmpty ? "cluster" : namespace)/\(kind.lowercased())-\(name).yaml", yaml: value.yamlText()
        )
    }
}

/// Manifests the planner writes.
enum Generate {
    /// The `targetRefs` (kind Service) twin of a selector-based policy, for its waypoint:
    /// the same spec without `selector`, named `<name>-waypoint`. A mesh-wide policy (root
    /// namespace, no selector) targets every waypoint through the `istio-waypoint`
    /// GatewayClass. At most 16 refs per policy (the CRD's limit): larger sets are split
    /// into `<name>-waypoint-2`, ….
    static func twins(of manifest: Manifest, targets: Targets) -> [YAMLValue] {
        let refs: [YAMLValue]
        switch targets {
        case .meshWide:
            refs = [.object(["group": .string("gateway.networking.k8s.io"), "kind": .string("GatewayClass"), "name": .string("istio-waypoint")])]
        case .namespace(let services), .workloads(_, let services):
            refs = services.map { .object(["group": .string(""), "kind": .string("Service"), "name": .string($0.name)]) }
        }
        guard !refs.isEmpty else { return [] }
        let chunks = stride(from: 0, to: refs.count, by: 16).map { Array(refs[$0..<min($0 + 16, refs.count)]) }
        return chunks.enumerated().map { index, chunk in
            let spec = YAMLValue.mapping([.init("targetRefs", .sequence(chunk))] + (manifest.spec.entries ?? []).filter { !["selector", "targetRef", "targetRefs"].contains($0.key) })
            var metadata: [YAMLValue.Entry] = [
                .init("name", .string("\(manifest.name)-waypoint\(index == 0 ? "" : "-\(index + 1)")")),
                .init("namespace", .string(manifest.namespace)),
            ]
            if !manifest.labels.isEmpty { metadata.append(.init("labels", .labels(manifest.labels))) }
            return .object(["apiVersion": .string(manifest.apiVersion), "kind": .string(manifest.kind), "metadata": .mapping(metadata), "spec": spec])
        }
    }

    /// The Gateway `istioctl waypoint apply` creates: class `istio-waypoint`, one HBONE
    /// listener named `mesh` on 15008, for Service traffic.
    static func waypoint(_ name: String, namespace: String) -> YAMLValue {
        .object([
            "apiVersion": .string("gateway.networking.k8s.io/v1"),
            "kind": .string("Gateway"),
            "metadata": .object(["name": .string(name), "namespace": .string(namespace), "labels": .labels(["istio.io/waypoint-for": "service"])]),
            "spec": .object([
                "gatewayClassName": .string("istio-waypoint"),
                "listeners": .sequence([.object(["name": .string("mesh"), "port": .int(15008), "protocol": .string("HBONE")])]),
            ]),
        ])
    }
}
