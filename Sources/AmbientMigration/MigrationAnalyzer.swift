/// Reads a sidecar-mode configuration and says, per resource, whether the node proxy
/// (ztunnel) can enforce it or a waypoint is needed, then plans the move to ambient mode.
///
/// ```swift
/// let input = ManifestLoader.load(paths: ["manifests/"])
/// let report = MigrationAnalyzer().analyze(input)
/// ```
public struct MigrationAnalyzer: Sendable {
    /// Settings, each with the default Istio uses.
    public struct Configuration: Hashable, Sendable {
        /// Istio's root namespace: policies there without a selector are mesh-wide.
        public var rootNamespace = "istio-system"
        /// The mesh's trust domain, for the waypoint identities the report suggests.
        public var trustDomain = "cluster.local"
        /// The cluster DNS suffix in service hostnames (`reviews.backend.svc.cluster.local`).
        public var domainSuffix = "cluster.local"
        /// The waypoint name `istioctl waypoint apply` uses by default.
        public var waypointName = "waypoint"
        /// Where the commands expect the generated manifests (`--emit DIR`).
        public var emitDirectory = "ambient-migration"

        public init() {}
    }

    public var configuration: Configuration

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Namespaces that are never moved to ambient.
    static let systemNamespaces: Set<String> = ["kube-system", "kube-public", "kube-node-lease", "istio-system"]

    public func analyze(_ input: ManifestSet) -> MigrationReport {
        let cluster = Cluster(input.manifests, rootNamespace: self.configuration.rootNamespace, domainSuffix: self.configuration.domainSuffix)
        var diagnostics = input.diagnostics
        var analyses: [(Manifest, Analysis)] = []
        for manifest in input.manifests where !Cluster.isInventory(manifest) {
            let analysis = Self.analyze(manifest, cluster: cluster)
            analyses.append((manifest, analysis))
            diagnostics += analysis.diagnostics
        }
        var inventory = Inventory()
        inventory.namespaces = cluster.namespaceNames
        inventory.services = cluster.serviceCount
        inventory.workloads = cluster.workloadCount
        inventory.files = Array(Set(input.manifests.map(\.location.file))).sorted()

        var planner = Planner(configuration: self.configuration, cluster: cluster, analyses: analyses)
        let plan = planner.plan()
        diagnostics += planner.diagnostics
        diagnostics += Self.namespaceReferences(input.manifests, cluster: cluster)
        return MigrationReport(
            inventory: inventory, findings: analyses.map(\.1.finding).sorted { $0.resource < $1.resource },
            diagnostics: diagnostics.sorted { ($1.severity, $0.resource?.description ?? "") < ($0.severity, $1.resource?.description ?? "") },
            plan: plan
        )
    }

    static func analyze(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        switch (manifest.group, manifest.kind) {
        case ("security.istio.io", "AuthorizationPolicy"): return PolicyAnalysis.authorizationPolicy(manifest, cluster: cluster)
        case ("security.istio.io", "PeerAuthentication"): return PolicyAnalysis.peerAuthentication(manifest, cluster: cluster)
        case ("security.istio.io", "RequestAuthentication"): return PolicyAnalysis.requestAuthentication(manifest, cluster: cluster)
        case ("telemetry.istio.io", "Telemetry"): return PolicyAnalysis.telemetry(manifest, cluster: cluster)
        case ("networking.istio.io", "VirtualService"): return RouteAnalysis.virtualService(manifest, cluster: cluster)
        case ("networking.istio.io", "DestinationRule"): return RouteAnalysis.destinationRule(manifest, cluster: cluster)
        case ("networking.istio.io", "ServiceEntry"): return RouteAnalysis.serviceEntry(manifest)
        case ("networking.istio.io", "Sidecar"): return RouteAnalysis.sidecar(manifest)
        case ("networking.istio.io", "Gateway"), ("gateway.networking.k8s.io", "Gateway"): return RouteAnalysis.gateway(manifest)
        case ("gateway.networking.k8s.io", "HTTPRoute"), ("gateway.networking.k8s.io", "GRPCRoute"),
             ("gateway.networking.k8s.io", "TCPRoute"), ("gateway.networking.k8s.io", "TLSRoute"):
            return RouteAnalysis.gatewayAPIRoute(manifest, cluster: cluster)
        case ("gateway.networking.k8s.io", "GatewayClass"), ("gateway.networking.k8s.io", "ReferenceGrant"):
            return Analysis(finding: RouteAnalysis.finding(manifest, .unaffected, ["Gateway API plumbing: unchanged"]))
        default:
            let finding = RouteAnalysis.finding(manifest, .unknown, ["kind \(manifest.kind) (\(manifest.apiVersion)) is not analysed: left as is"])
            return Analysis(finding: finding, diagnostics: [Diagnostic(
                .note, resource: manifest.id, location: manifest.location, "unknown kind \(manifest.kind) (\(manifest.apiVersion)): not analysed, listed as is"
            )])
        }
    }

    /// Namespaces that policies name in `from.source.namespaces` but the input lacks.
    static func namespaceReferences(_ manifests: [Manifest], cluster: Cluster) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for manifest in manifests where manifest.kind == "AuthorizationPolicy" {
            var named: [String] = []
            for rule in manifest.spec["rules"]?.items ?? [] {
                for source in rule["from"]?.items ?? [] {
                    named += (source["source"]?["namespaces"]?.textList ?? []) + (source["source"]?["notNamespaces"]?.textList ?? [])
                }
            }
            for namespace in Set(named).sorted() where !namespace.contains("*") && cluster.namespace(namespace) == nil {
                diagnostics.append(Diagnostic(
                    .warning, resource: manifest.id, location: manifest.location,
                    "refers to namespace \(namespace), which is not in the input (missing namespace, or a typo?)"
                ))
            }
        }
        return diagnostics
    }
}
