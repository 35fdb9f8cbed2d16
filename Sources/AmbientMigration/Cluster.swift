/// The objects of the input indexed for selector resolution: namespaces, pods (from
/// workload templates), Services, gateways and DestinationRule subsets.
struct Cluster {
    struct Namespace {
        var name: String
        var labels: [String: String]
        /// Whether a Namespace object was in the input (else only referenced).
        var declared: Bool
    }

    struct Workload {
        var namespace: String
        var kind: String
        var name: String
        var podLabels: [String: String]
        /// The pod template asks for a sidecar itself (`sidecar.istio.io/inject: "true"` as
        /// label or annotation, or `istio.io/rev`).
        var requestsSidecar: Bool

        /// Gateway pods keep their Envoy: `istio: ingressgateway` (istioctl), `istio: <release>`
        /// of the Helm gateway chart, or a Gateway API deployment.
        var isGateway: Bool {
            if Cluster.namesIstioGateway(self.podLabels) { return true }
            return self.podLabels["gateway.networking.k8s.io/gateway-name"] != nil && self.podLabels["istio.io/waypoint-for"] == nil
                && self.podLabels["gateway.istio.io/managed"] != "istio.io-mesh-controller"
        }
    }

    struct Service {
        var namespace: String
        var name: String
        var selector: [String: String]
        var ports: [Int]
        /// `clusterIP: None`: clients resolve pod IPs, so a waypoint never sees its traffic.
        var headless: Bool
        var manifest: Manifest

        var key: String { "\(self.namespace)/\(self.name)" }
    }

    struct Gateway {
        var namespace: String
        var name: String
        var className: String
        /// `istio.io/waypoint-for`: `service` (istiod's default), `workload`, `all` or `none`.
        var waypointFor: String?
        var isWaypoint: Bool { self.className == "istio-waypoint" }
        var servesServices: Bool { self.waypointFor.map { $0 == "service" || $0 == "all" } ?? true }
    }

    var rootNamespace: String
    var domainSuffix: String
    private(set) var namespaces: [String: Namespace] = [:]
    private(set) var workloads: [Workload] = []
    private(set) var services: [Service] = []
    private(set) var gateways: [String: Gateway] = [:]
    /// DestinationRule subsets by `namespace/service` then subset name.
    private(set) var subsets: [String: [String: [String: String]]] = [:]
    /// `namespace/service` of the Services a DestinationRule gives traffic policy.
    private(set) var subsetPolicies: Set<String> = []
    /// Every object of the input, to keep generated names from overwriting one.
    private(set) var ids: Set<ResourceID> = []

    static let workloadKinds: Set<String> = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"]
    static let inventoryKinds: Set<String> = workloadKinds.union(["Namespace", "Service", "ServiceAccount"])

    /// Core and workload objects: read for selectors, not classified.
    static func isInventory(_ manifest: Manifest) -> Bool {
        Self.inventoryKinds.contains(manifest.kind) && ["", "apps", "batch"].contains(manifest.group)
    }

    init(_ manifests: [Manifest], rootNamespace: String, domainSuffix: String) {
        self.rootNamespace = rootNamespace
        self.domainSuffix = domainSuffix
        self.ids = Set(manifests.map(\.id))
        for manifest in manifests { self.index(manifest) }
        for manifest in manifests where manifest.kind == "DestinationRule" { self.indexSubsets(manifest) }
    }

    private mutating func index(_ manifest: Manifest) {
        if manifest.kind != "Namespace", manifest.kind != "GatewayClass", self.namespaces[manifest.namespace] == nil {
            self.namespaces[manifest.namespace] = Namespace(name: manifest.namespace, labels: [:], declared: false)
        }
        switch manifest.kind {
        case "Namespace":
            self.namespaces[manifest.name] = Namespace(name: manifest.name, labels: manifest.labels, declared: true)
        case "Service" where manifest.group.isEmpty:
            let ports = manifest.spec["ports"]?.items ?? []
            self.services.append(Service(
                namespace: manifest.namespace, name: manifest.name,
                selector: manifest.spec["selector"]?.stringMap ?? [:],
                ports: ports.compactMap { $0["port"]?.int },
                headless: manifest.spec["clusterIP"]?.scalarText == "None", manifest: manifest
            ))
        case let kind where Self.workloadKinds.contains(kind):
            let pod = kind == "Pod" ? manifest.body : (manifest.spec["template"] ?? .null)
            let labels = pod["metadata"]?["labels"]?.stringMap ?? [:]
            let annotations = pod["metadata"]?["annotations"]?.stringMap ?? [:]
            self.workloads.append(Workload(
                namespace: manifest.namespace, kind: kind, name: manifest.name, podLabels: labels,
                requestsSidecar: labels["sidecar.istio.io/inject"] == "true" || annotations["sidecar.istio.io/inject"] == "true" || labels["istio.io/rev"] != nil
            ))
        case "Gateway" where manifest.group == "gateway.networking.k8s.io":
            self.gateways["\(manifest.namespace)/\(manifest.name)"] = Gateway(
                namespace: manifest.namespace, name: manifest.name, className: manifest.spec["gatewayClassName"]?.string ?? "",
                waypointFor: manifest.labels["istio.io/waypoint-for"]
            )
        default:
            break
        }
    }

    private mutating func indexSubsets(_ manifest: Manifest) {
        guard let host = manifest.spec["host"]?.string, let service = self.service(host: host, from: manifest.namespace) else { return }
        if manifest.spec["trafficPolicy"] != nil || (manifest.spec["subsets"]?.items ?? []).contains(where: { $0["trafficPolicy"] != nil }) {
            self.subsetPolicies.insert(service.key)
        }
        for subset in manifest.spec["subsets"]?.items ?? [] {
            guard let name = subset["name"]?.scalarText else { continue }
            self.subsets[service.key, default: [:]][name] = subset["labels"]?.stringMap ?? [:]
        }
    }

    // MARK: Lookups

    var serviceCount: Int { self.services.count }
    var workloadCount: Int { self.workloads.count }
    var namespaceNames: [String] { self.namespaces.keys.sorted() }
    var workloadsNamespaces: [String] { self.workloads.map(\.namespace) }

    /// Kinds of restartable workloads (`kubectl rollout restart`) in a namespace.
    func workloadKinds(in namespace: String) -> [String] {
        self.workloads.filter { $0.namespace == namespace && ["Deployment", "StatefulSet", "DaemonSet"].contains($0.kind) }.map(\.kind)
    }

    func namespace(_ name: String) -> Namespace? { self.namespaces[name] }

    func services(in namespace: String) -> [Service] {
        self.services.filter { $0.namespace == namespace }
    }

    /// Workloads whose pods carry every label of `selector`, in `namespace`.
    func workloads(matching selector: [String: String], in namespace: String) -> [Workload] {
        self.workloads.filter { $0.namespace == namespace && Self.matches(selector, $0.podLabels) }
    }

    /// Services that select (some of) `workloads`' pods.
    func services(selecting workloads: [Workload]) -> [Service] {
        self.services.filter { service in
            !service.selector.isEmpty && workloads.contains { $0.namespace == service.namespace && Self.matches(service.selector, $0.podLabels) }
        }
    }

    /// The workloads a Service selects.
    func workloads(selectedBy service: Service) -> [Workload] {
        guard !service.selector.isEmpty else { return [] }
        return self.workloads.filter { $0.namespace == service.namespace && Self.matches(service.selector, $0.podLabels) }
    }

    static func matches(_ selector: [String: String], _ labels: [String: String]) -> Bool {
        selector.allSatisfy { labels[$0.key] == $0.value }
    }

    /// Resolves a route or rule host as Istio does: a short name is in `namespace`,
    /// `name.ns`, `name.ns.svc` and `name.ns.svc.<domain>` name a Service in `ns`.
    func service(host: String, from namespace: String) -> Service? {
        let parts = host.split(separator: ".").map(String.init)
        guard let first = parts.first, !host.contains("*") else { return nil }
        let serviceNamespace: String
        switch parts.count {
        case 1: serviceNamespace = namespace
        case 2: serviceNamespace = parts[1]
        default:
            guard parts[2] == "svc", parts.count == 3 || parts[3...].joined(separator: ".") == self.domainSuffix else { return nil }
            serviceNamespace = parts[1]
        }
        return self.services.first { $0.namespace == serviceNamespace && $0.name == first }
    }

    func contains(_ id: ResourceID) -> Bool { self.ids.contains(id) }

    /// Gateway pods (workloads that keep their Envoy) in a namespace, or in all when
    /// `namespace` is `nil`, as `namespace/name`; Gateway API Gateways that are not
    /// waypoints count too (Istio deploys their pods next to them).
    func gatewayPods(in namespace: String?) -> [String] {
        let pods = self.workloads.filter { $0.isGateway && (namespace == nil || $0.namespace == namespace) }.map { "\($0.namespace)/\($0.name)" }
        let gatewayAPI = self.gateways.values.filter { !$0.isWaypoint && (namespace == nil || $0.namespace == namespace) }.map { "\($0.namespace)/\($0.name)" }
        return Array(Set(pods + gatewayAPI)).sorted()
    }

    var workloadsRequestingSidecars: [Workload] { self.workloads.filter(\.requestsSidecar) }

    /// Services a route sends to, as `namespace/name`: HTTPRoute/GRPCRoute `backendRefs`
    /// (kind Service) and VirtualService destinations.
    func routeBackends(_ manifest: Manifest) -> [String] {
        if manifest.kind == "VirtualService" {
            let routes = ["http", "tcp", "tls"].flatMap { manifest.spec[$0]?.items ?? [] }
            return routes.flatMap { $0["route"]?.items ?? [] }.compactMap { destination in
                destination["destination"]?["host"]?.scalarText.flatMap { self.service(host: $0, from: manifest.namespace)?.key }
            }
        }
        return (manifest.spec["rules"]?.items ?? []).flatMap { $0["backendRefs"]?.items ?? [] }.compactMap { ref in
            guard (ref["kind"]?.scalarText ?? "Service") == "Service", let name = ref["name"]?.scalarText else { return nil }
            return "\(ref["namespace"]?.scalarText ?? manifest.namespace)/\(name)"
        }
    }

    /// A Service that fronts gateway or waypoint pods rather than an application.
    func isInfrastructure(_ service: Service) -> Bool {
        service.selector["gateway.networking.k8s.io/gateway-name"] != nil || Self.namesIstioGateway(service.selector)
    }

    /// Istio's gateway installs label their pods `istio: ingressgateway` / `egressgateway`
    /// (istioctl) or `istio: <release>` (the Helm gateway chart, e.g. `ingress`).
    static func namesIstioGateway(_ labels: [String: String]) -> Bool {
        guard let value = labels["istio"] else { return false }
        return ["gateway", "ingress", "egress"].contains(where: value.contains)
    }

    /// Whether a selector picks ingress/egress gateway pods (which keep their Envoy).
    func selectsGateway(_ selector: [String: String], in namespace: String) -> Bool {
        if Self.namesIstioGateway(selector) { return true }
        if let name = selector["gateway.networking.k8s.io/gateway-name"] {
            return !(self.gateways["\(namespace)/\(name)"]?.isWaypoint ?? false)
        }
        return false
    }
}
