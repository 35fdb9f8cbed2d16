public import InternetAddress

/// The proxy's view of the mesh: one immutable snapshot of a ``LocalConfig`` with the
/// indices ztunnel keeps (workloads by UID and by network address, services by VIP and by
/// hostname, endpoints derived from the workloads' `services` maps), and the two questions
/// the data path asks: where does an outbound connection go, and is an inbound one allowed.
/// A reload builds a new store; connections hold on to the one they started with.
public struct MeshStore: Sendable {
    public let config: LocalConfig
    private let workloadsByUID: [String: Workload]
    private let workloadsByAddress: [NetworkAddress: Workload]
    private let servicesByVIP: [NetworkAddress: [Service]]
    private let servicesByKey: [String: Service]
    /// Service key → (workload UID, port map) for every endpoint.
    private let endpointsByService: [String: [(uid: String, ports: [UInt16: UInt16])]]
    /// `namespace/name` → the first workload with it (ZDS names pods that way).
    private let workloadsByName: [String: Workload]
    /// Indices into `config.policies`: Global ones, Namespace ones by namespace, and
    /// WorkloadSelector ones by `namespace/name`, so authorization looks at the few
    /// policies that can apply instead of scanning all of them.
    private let globalPolicies: [Int]
    private let namespacePolicies: [String: [Int]]
    private let selectorPolicies: [String: [Int]]

    public init(_ config: LocalConfig) {
        self.config = config
        var byUID: [String: Workload] = [:]
        var byName: [String: Workload] = [:]
        var byAddress: [NetworkAddress: Workload] = [:]
        var endpoints: [String: [(uid: String, ports: [UInt16: UInt16])]] = [:]
        for workload in config.workloads {
            byUID[workload.uid] = workload
            if byName["\(workload.namespace)/\(workload.name)"] == nil { byName["\(workload.namespace)/\(workload.name)"] = workload }
            if workload.networkMode == .standard {
                for ip in workload.workloadIPs { byAddress[NetworkAddress(network: workload.network, address: ip)] = workload }
            }
            for (service, ports) in workload.services.sorted(by: { $0.key < $1.key }) {
                endpoints[service, default: []].append((workload.uid, ports))
            }
        }
        var byVIP: [NetworkAddress: [Service]] = [:]
        var byKey: [String: Service] = [:]
        for service in config.services {
            byKey[service.key] = service
            for vip in service.vips { byVIP[vip, default: []].append(service) }
            for (uid, ports) in service.endpoints.sorted(by: { $0.key < $1.key }) where !(endpoints[service.key] ?? []).contains(where: { $0.uid == uid }) {
                endpoints[service.key, default: []].append((uid, ports))
            }
        }
        self.workloadsByUID = byUID
        self.workloadsByAddress = byAddress
        self.servicesByVIP = byVIP
        self.servicesByKey = byKey
        self.endpointsByService = endpoints
        self.workloadsByName = byName
        var global: [Int] = []
        var byNamespace: [String: [Int]] = [:]
        var bySelector: [String: [Int]] = [:]
        for (index, policy) in config.policies.enumerated() {
            switch policy.scope {
            case .global: global.append(index)
            case .namespace: byNamespace[policy.namespace, default: []].append(index)
            case .workloadSelector: bySelector[policy.key, default: []].append(index)
            }
        }
        self.globalPolicies = global
        self.namespacePolicies = byNamespace
        self.selectorPolicies = bySelector
    }

    // MARK: Lookups

    public func workload(uid: String) -> Workload? { self.workloadsByUID[uid] }

    public func workload(at address: IPAddress, network: String = "") -> Workload? {
        self.workloadsByAddress[NetworkAddress(network: network, address: address)]
    }

    /// The workload a pod handed over by ZDS is (by namespace and name).
    public func workload(namespace: String, name: String) -> Workload? {
        self.workloadsByName["\(namespace)/\(name)"]
    }

    /// Every workload with this SPIFFE identity.
    public func workloads(with identity: PeerIdentity) -> [Workload] {
        self.config.workloads.filter { $0.identity == identity }
    }

    public func service(namespace: String, hostname: String) -> Service? { self.servicesByKey["\(namespace)/\(hostname)"] }

    /// The service a VIP belongs to, ranked as ztunnel does: same namespace as the client,
    /// then `canonical`, then the first; namespace-visible services only for their namespace.
    public func service(vip: IPAddress, network: String = "", clientNamespace: String? = nil) -> Service? {
        let candidates = (self.servicesByVIP[NetworkAddress(network: network, address: vip)] ?? [])
            .filter { $0.visibility == .public || $0.namespace == clientNamespace }
        return candidates.first { $0.namespace == clientNamespace } ?? candidates.first { $0.canonical } ?? candidates.first
    }

    /// The endpoints of `service`: healthy workloads with an address.
    public func endpoints(of service: Service) -> [(workload: Workload, ports: [UInt16: UInt16])] {
        (self.endpointsByService[service.key] ?? []).compactMap { endpoint in
            guard let workload = self.workloadsByUID[endpoint.uid], workload.status == .healthy, !workload.workloadIPs.isEmpty else { return nil }
            return (workload, endpoint.ports)
        }
    }

    // MARK: Outbound

    /// Where an outbound connection goes.
    public enum Upstream: Hashable, Sendable {
        /// HBONE to `workload` at `address:15008` with authority `address:targetPort`.
        case hbone(workload: Workload, address: IPAddress, targetPort: UInt16, service: String?)
        /// Plain TCP to a workload that is not in the mesh.
        case tcp(workload: Workload, address: IPAddress, port: UInt16, service: String?)
        /// Unknown destination: straight to the original address.
        case passthrough(address: IPAddress, port: UInt16)
    }

    /// Why an outbound connection has nowhere to go.
    public enum ResolutionError: Error, Hashable, Sendable, CustomStringConvertible {
        case portNotInService(service: String, port: UInt16)
        case noHealthyEndpoint(service: String)
        case unknownTargetPort(service: String, port: UInt16)

        public var description: String {
            switch self {
            case .portNotInService(let service, let port): "service \(service) has no port \(port)"
            case .noHealthyEndpoint(let service): "service \(service) has no healthy endpoint"
            case .unknownTargetPort(let service, let port): "port \(port) of service \(service) was unknown"
            }
        }
    }

    /// ztunnel's `find_upstream`: a service VIP picks an endpoint (weighted by `capacity`)
    /// and translates the port (endpoint map, else the service's target port, 0 being a
    /// named port); a workload address keeps the port; anything else passes through.
    public func resolve(destination: IPAddress, port: UInt16, from source: Workload?, using random: inout some RandomNumberGenerator) throws(ResolutionError) -> Upstream {
        let network = source?.network ?? ""
        if let service = self.service(vip: destination, network: network, clientNamespace: source?.namespace) {
            if service.loadBalancingMode == .passthrough { return .passthrough(address: destination, port: port) }
            guard let servicePort = service.ports[port] else { throw .portNotInService(service: service.hostname, port: port) }
            var candidates = self.endpoints(of: service)
            if servicePort == 0 { candidates = candidates.filter { $0.ports[port] != nil } }
            let total = candidates.reduce(UInt64(0)) { $0 + UInt64($1.workload.capacity) }
            guard total > 0 else { throw .noHealthyEndpoint(service: service.hostname) }
            var pick = UInt64.random(in: 0..<total, using: &random)
            var chosen = candidates[0]
            for candidate in candidates {
                if pick < UInt64(candidate.workload.capacity) { chosen = candidate; break }
                pick -= UInt64(candidate.workload.capacity)
            }
            let target: UInt16
            if let mapped = chosen.ports[port] {
                target = mapped
            } else if servicePort > 0 {
                target = servicePort
            } else {
                throw .unknownTargetPort(service: service.hostname, port: port)
            }
            let address = chosen.workload.workloadIPs.first { $0.isIPv6 == destination.isIPv6 } ?? chosen.workload.workloadIPs[0]
            return chosen.workload.tunnelProtocol == .hbone
                ? .hbone(workload: chosen.workload, address: address, targetPort: target, service: service.hostname)
                : .tcp(workload: chosen.workload, address: address, port: target, service: service.hostname)
        }
        if let workload = self.workload(at: destination, network: network) {
            return workload.tunnelProtocol == .hbone
                ? .hbone(workload: workload, address: destination, targetPort: port, service: nil)
                : .tcp(workload: workload, address: destination, port: port, service: nil)
        }
        return .passthrough(address: destination, port: port)
    }

    // MARK: Inbound

    /// L4 authorization of an inbound connection to `workload`.
    /// Only the policies that can apply are evaluated, in config order, with the same
    /// semantics as `config.policies.evaluate(_:for:)`.
    public func authorize(_ connection: ConnectionAttributes, to workload: Workload) -> (decision: AuthorizationDecision, dryRunMatches: [String]) {
        var indices = self.globalPolicies + (self.namespacePolicies[workload.namespace] ?? [])
        for key in workload.authorizationPolicies { indices += self.selectorPolicies[key] ?? [] }
        indices.sort()
        var previous = -1
        var candidates: [Authorization] = []
        candidates.reserveCapacity(indices.count)
        for index in indices where index != previous {
            candidates.append(self.config.policies[index])
            previous = index
        }
        return candidates.evaluate(connection, for: workload)
    }
}
