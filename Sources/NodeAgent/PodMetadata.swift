/// What the agent needs to know about a pod (the fields istio-cni reads from the API server).
public struct PodInfo: Hashable, Sendable, Codable {
    public var name: String
    public var namespace: String
    /// `metadata.uid`: the key of enrollment, ipset comments and ZDS messages.
    public var uid: String
    /// `spec.serviceAccountName`.
    public var serviceAccount: String
    public var labels: [String: String]
    public var annotations: [String: String]
    /// The pod's network namespace path (what the runtime passes as `CNI_NETNS`).
    public var netns: String?
    /// `spec.hostNetwork`.
    public var hostNetwork: Bool
    /// `status.podIPs`.
    public var ips: [String]

    public init(
        name: String, namespace: String, uid: String, serviceAccount: String = "default", labels: [String: String] = [:],
        annotations: [String: String] = [:], netns: String? = nil, hostNetwork: Bool = false, ips: [String] = []
    ) {
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.serviceAccount = serviceAccount
        self.labels = labels
        self.annotations = annotations
        self.netns = netns
        self.hostNetwork = hostNetwork
        self.ips = ips
    }

    enum CodingKeys: String, CodingKey {
        case name, namespace, uid, serviceAccount, labels, annotations, netns, hostNetwork, ips
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try container.decode(String.self, forKey: .name)
        self.namespace = try container.decodeIfPresent(String.self, forKey: .namespace) ?? "default"
        self.uid = try container.decode(String.self, forKey: .uid)
        self.serviceAccount = try container.decodeIfPresent(String.self, forKey: .serviceAccount) ?? "default"
        self.labels = try container.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
        self.annotations = try container.decodeIfPresent([String: String].self, forKey: .annotations) ?? [:]
        self.netns = try container.decodeIfPresent(String.self, forKey: .netns)
        self.hostNetwork = try container.decodeIfPresent(Bool.self, forKey: .hostNetwork) ?? false
        self.ips = try container.decodeIfPresent([String].self, forKey: .ips) ?? []
    }
}

/// A namespace and its labels.
public struct NamespaceInfo: Hashable, Sendable, Codable {
    public var name: String
    public var labels: [String: String]

    public init(name: String, labels: [String: String] = [:]) {
        self.name = name
        self.labels = labels
    }

    enum CodingKeys: String, CodingKey { case name, labels }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try container.decode(String.self, forKey: .name)
        self.labels = try container.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
    }
}

/// Everything a metadata source knows at one moment.
public struct ClusterState: Hashable, Sendable, Codable {
    public var namespaces: [NamespaceInfo]
    public var pods: [PodInfo]

    public init(namespaces: [NamespaceInfo] = [], pods: [PodInfo] = []) {
        self.namespaces = namespaces
        self.pods = pods
    }

    enum CodingKeys: String, CodingKey { case namespaces, pods }

    /// Either list may be absent or empty (`pods:` with nothing under it).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.namespaces = try container.decodeIfPresent([NamespaceInfo].self, forKey: .namespaces) ?? []
        self.pods = try container.decodeIfPresent([PodInfo].self, forKey: .pods) ?? []
    }

    public func pod(namespace: String, name: String) -> PodInfo? {
        self.pods.first { $0.namespace == namespace && $0.name == name }
    }

    public func namespace(_ name: String) -> NamespaceInfo? {
        self.namespaces.first { $0.name == name }
    }
}

/// Where pod and namespace metadata come from: a file now (``FileMetadataSource``), a
/// Kubernetes informer later.
public protocol PodMetadataSource: Sendable {
    /// The current state.
    func current() async throws -> ClusterState
    /// Every new state after a change, starting with the current one.
    func updates() -> AsyncThrowingStream<ClusterState, any Error>
}

/// The annotation istio-cni writes on enrolled pods and istiod reads to mark a workload
/// HBONE-capable.
public enum RedirectionState: String, Hashable, Sendable, Codable {
    /// Rules installed and the node proxy acknowledged the workload.
    case enabled
    /// Rules installed but the node proxy has not acknowledged yet.
    case pending

    /// `ambient.istio.io/redirection`.
    public static let annotation = "ambient.istio.io/redirection"
}
