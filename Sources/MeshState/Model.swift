public import InternetAddress

/// How a workload receives mesh traffic (`protocol` in ztunnel's local config).
public enum TunnelProtocol: String, Hashable, Sendable {
    /// Plain TCP: not in the mesh (or a sidecar-less destination without ztunnel).
    case tcp = "TCP"
    /// HBONE on port 15008.
    case hbone = "HBONE"
}

/// An address in a network: `"<network>/<ip>"`, the network may be empty.
public struct NetworkAddress: Hashable, Sendable, CustomStringConvertible {
    public var network: String
    public var address: IPAddress

    public init(network: String, address: IPAddress) {
        self.network = network
        self.address = address
    }

    /// Parses `"network/ip"`, split at the first `/`.
    public init?(_ text: String) {
        guard let slash = text.firstIndex(of: "/"), let address = IPAddress(String(text[text.index(after: slash)...])) else { return nil }
        self.network = String(text[..<slash])
        self.address = address
    }

    public var description: String { "\(self.network)/\(self.address)" }
}

/// Where a waypoint or network gateway is: an address or a service hostname, and its HBONE port.
public struct GatewayAddress: Hashable, Sendable {
    public enum Destination: Hashable, Sendable {
        case address(NetworkAddress)
        case hostname(namespace: String, hostname: String)
    }

    public var destination: Destination
    public var hboneMtlsPort: UInt16

    public init(destination: Destination, hboneMtlsPort: UInt16) {
        self.destination = destination
        self.hboneMtlsPort = hboneMtlsPort
    }
}

/// A workload (a pod) as ztunnel's local config describes it; defaults are the local
/// config's, not xDS's (empty trust domain and service account).
public struct Workload: Hashable, Sendable {
    public enum Status: String, Hashable, Sendable { case healthy = "Healthy", unhealthy = "Unhealthy" }
    public enum NetworkMode: String, Hashable, Sendable { case standard = "Standard", hostNetwork = "HostNetwork" }

    public var uid = ""
    public var name = ""
    public var namespace: String
    public var serviceAccount = ""
    public var trustDomain = ""
    public var workloadIPs: [IPAddress] = []
    public var tunnelProtocol: TunnelProtocol = .tcp
    public var networkMode: NetworkMode = .standard
    public var network = ""
    public var workloadName = ""
    public var workloadType = ""
    public var canonicalName = ""
    public var canonicalRevision = ""
    public var hostname = ""
    public var node = ""
    public var nativeTunnel = false
    public var authorizationPolicies: [String] = []
    public var status: Status = .healthy
    public var clusterID = ""
    public var waypoint: GatewayAddress?
    public var networkGateway: GatewayAddress?
    public var capacity: UInt32 = 1
    /// `"namespace/hostname"` → service port → target port.
    public var services: [String: [UInt16: UInt16]] = [:]

    public init(namespace: String) {
        self.namespace = namespace
    }

    /// The workload's SPIFFE identity.
    public var identity: PeerIdentity {
        PeerIdentity(trustDomain: self.trustDomain, namespace: self.namespace, serviceAccount: self.serviceAccount)
    }
}

/// A service: VIPs, ports and the endpoints derived from workloads.
public struct Service: Hashable, Sendable {
    public enum Visibility: String, Hashable, Sendable { case `public` = "Public", namespace = "Namespace" }
    public enum LoadBalancingMode: String, Hashable, Sendable { case standard = "Standard", strict = "Strict", failover = "Failover", passthrough = "Passthrough" }

    public var name: String
    public var namespace: String
    public var hostname: String
    public var vips: [NetworkAddress]
    /// Service port → target port (0: a named port, resolved per endpoint).
    public var ports: [UInt16: UInt16]
    public var subjectAltNames: [String] = []
    public var waypoint: GatewayAddress?
    public var canonical = false
    public var visibility: Visibility = .public
    public var loadBalancingMode: LoadBalancingMode?
    /// Explicit endpoints: workload UID → port map.
    public var endpoints: [String: [UInt16: UInt16]] = [:]

    public init(name: String, namespace: String, hostname: String, vips: [NetworkAddress], ports: [UInt16: UInt16]) {
        self.name = name
        self.namespace = namespace
        self.hostname = hostname
        self.vips = vips
        self.ports = ports
    }

    /// `namespace/hostname`, the key workloads use in their `services` map.
    public var key: String { "\(self.namespace)/\(self.hostname)" }
}
