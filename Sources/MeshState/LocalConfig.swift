internal import BoundedYAML
internal import InternetAddress
internal import Yams

/// ztunnel's local configuration (`LOCAL_XDS_PATH`; `src/xds.rs` `LocalConfig`): workloads,
/// authorization policies and services in YAML, with ztunnel's field names, so a file
/// written for Istio's ztunnel loads unchanged.
///
/// Follows ztunnel's parser: unknown keys are rejected at the top level and in workloads,
/// services and policies (and silently ignored inside policy matches); string matches are
/// YAML tags (`!Exact "…"`, `!Prefix`, `!Suffix`, `!Presence []`); VIPs are `"network/ip"`;
/// IP blocks need a prefix length; port maps have integer keys. Supersets accepted on
/// purpose: a missing `dryRun` means `false`, and `{Exact: x}` maps work like tags.
public struct LocalConfig: Hashable, Sendable {
    public var workloads: [Workload] = []
    public var policies: [Authorization] = []
    public var services: [Service] = []

    public init(workloads: [Workload] = [], policies: [Authorization] = [], services: [Service] = []) {
        self.workloads = workloads
        self.policies = policies
        self.services = services
    }

    /// The most values (scalars, sequences, mappings) a file may have once its YAML aliases
    /// are expanded, unless the text itself is longer in bytes; aliases inside mapping keys
    /// and nesting past 1 000 levels are refused too (`BoundedYAML`).
    public static let maximumValues = BoundedYAML.maximumValues

    /// Parses a document.
    /// - Throws: ``LocalConfigError`` with the line, column and field path of the first problem.
    public static func parse(_ text: String) throws(LocalConfigError) -> LocalConfig {
        // serde_yaml, which ztunnel reads this file with, refuses documents whose aliases
        // repeat too much; without a limit a few KiB of anchors and aliases (a "billion
        // laughs" document) would keep the proxy building policies until memory runs out.
        let (documents, stop) = BoundedYAML.composeAll(text)
        switch stop {
        case .invalid(let error)?: throw LocalConfigError(line: nil, column: nil, path: "", message: "not YAML: \(error)")
        case .refused(_, let line, let reason)?: throw LocalConfigError(line: line, column: nil, path: "", message: reason)
        case nil: break
        }
        guard documents.count <= 1 else {
            throw LocalConfigError(line: documents[1].mark?.line, column: nil, path: "", message: "more than one YAML document")
        }
        guard let root = documents.first, root.null == nil else { return LocalConfig() }
        let top = try Field(root, "").mapping(allowed: ["workloads", "policies", "services"])
        var config = LocalConfig()
        config.workloads = try top["workloads"]?.list().map(Self.workload) ?? []
        config.policies = try top["policies"]?.list().map(Self.policy) ?? []
        config.services = try top["services"]?.list().map(Self.service) ?? []
        for workload in config.workloads {
            for key in workload.services.keys where !key.contains("/") {
                throw LocalConfigError(line: nil, column: nil, path: "workloads[\(workload.uid)].services", message: "service key \"\(key)\" is not namespace/hostname")
            }
        }
        return config
    }

    // MARK: Workloads

    static let workloadKeys: Set<String> = [
        "uid", "name", "namespace", "serviceAccount", "trustDomain", "workloadIps", "protocol", "networkMode", "network",
        "workloadName", "workloadType", "canonicalName", "canonicalRevision", "hostname", "node", "nativeTunnel",
        "applicationTunnel", "authorizationPolicies", "status", "clusterId", "locality", "waypoint", "networkGateway",
        "capacity", "services",
    ]

    static func workload(_ field: Field) throws(LocalConfigError) -> Workload {
        let keys = try field.mapping(allowed: Self.workloadKeys, required: ["workloadIps", "namespace", "services"])
        var workload = Workload(namespace: try keys["namespace"]!.string())
        workload.uid = try keys["uid"]?.string() ?? ""
        workload.name = try keys["name"]?.string() ?? ""
        workload.serviceAccount = try keys["serviceAccount"]?.string() ?? ""
        workload.trustDomain = try keys["trustDomain"]?.string() ?? ""
        workload.workloadIPs = try keys["workloadIps"]!.list().map { (item) throws(LocalConfigError) in try item.ip() }
        workload.tunnelProtocol = try keys["protocol"]?.enumeration(TunnelProtocol.self) ?? .tcp
        workload.networkMode = try keys["networkMode"]?.enumeration(Workload.NetworkMode.self) ?? .standard
        workload.network = try keys["network"]?.string() ?? ""
        workload.workloadName = try keys["workloadName"]?.string() ?? ""
        workload.workloadType = try keys["workloadType"]?.string() ?? ""
        workload.canonicalName = try keys["canonicalName"]?.string() ?? ""
        workload.canonicalRevision = try keys["canonicalRevision"]?.string() ?? ""
        workload.hostname = try keys["hostname"]?.string() ?? ""
        workload.node = try keys["node"]?.string() ?? ""
        workload.nativeTunnel = try keys["nativeTunnel"]?.bool() ?? false
        if let tunnel = keys["applicationTunnel"] {
            let fields = try tunnel.mapping(allowed: ["protocol", "port"], required: ["protocol"])
            _ = try fields["protocol"]!.enumeration(ApplicationTunnelProtocol.self)
            _ = try fields["port"]?.port()
        }
        workload.authorizationPolicies = try keys["authorizationPolicies"]?.list().map { (item) throws(LocalConfigError) in try item.string() } ?? []
        workload.status = try keys["status"]?.enumeration(Workload.Status.self) ?? .healthy
        workload.clusterID = try keys["clusterId"]?.string() ?? ""
        if let locality = keys["locality"] {
            _ = try locality.mapping(allowed: ["region", "zone", "subzone"], required: ["region", "zone", "subzone"])
        }
        workload.waypoint = try keys["waypoint"].map(Self.gateway)
        workload.networkGateway = try keys["networkGateway"].map(Self.gateway)
        if let capacity = keys["capacity"] { workload.capacity = UInt32(try capacity.integer(in: 0...Int(UInt32.max))) }
        for (service, ports) in try keys["services"]!.mappingEntries() {
            workload.services[service] = try ports.portMap()
        }
        return workload
    }

    enum ApplicationTunnelProtocol: String { case none = "NONE", proxy = "PROXY" }

    static func gateway(_ field: Field) throws(LocalConfigError) -> GatewayAddress {
        let keys = try field.mapping(allowed: ["destination", "hboneMtlsPort"], required: ["destination", "hboneMtlsPort"])
        let text = try keys["destination"]!.string()
        let port = try keys["hboneMtlsPort"]!.port()
        if let address = NetworkAddress(text) { return GatewayAddress(destination: .address(address), hboneMtlsPort: port) }
        guard let slash = text.firstIndex(of: "/") else {
            throw keys["destination"]!.error("destination \"\(text)\" is neither network/ip nor namespace/hostname")
        }
        return GatewayAddress(
            destination: .hostname(namespace: String(text[..<slash]), hostname: String(text[text.index(after: slash)...])), hboneMtlsPort: port
        )
    }

    // MARK: Services

    static let serviceKeys: Set<String> = [
        "name", "namespace", "hostname", "vips", "cidrVips", "ports", "endpoints", "subjectAltNames", "waypoint",
        "weightedWaypoints", "loadBalancer", "ipFamilies", "canonical", "visibility",
    ]

    static func service(_ field: Field) throws(LocalConfigError) -> Service {
        let keys = try field.mapping(allowed: Self.serviceKeys, required: ["name", "namespace", "hostname", "vips", "ports"])
        let vips = try keys["vips"]!.list().map { (item) throws(LocalConfigError) -> NetworkAddress in
            guard let address = NetworkAddress(try item.string()) else { throw item.error("VIP must be \"network/ip\"") }
            return address
        }
        var service = Service(
            name: try keys["name"]!.string(), namespace: try keys["namespace"]!.string(), hostname: try keys["hostname"]!.string(),
            vips: vips, ports: try keys["ports"]!.portMap()
        )
        service.subjectAltNames = try keys["subjectAltNames"]?.list().map { (item) throws(LocalConfigError) in try item.string() } ?? []
        service.waypoint = try keys["waypoint"].map(Self.gateway)
        service.canonical = try keys["canonical"]?.bool() ?? false
        service.visibility = try keys["visibility"]?.enumeration(Service.Visibility.self) ?? .public
        if let balancer = keys["loadBalancer"] {
            let fields = try balancer.mapping(allowed: ["routingPreferences", "mode", "healthPolicy"], required: ["routingPreferences", "mode", "healthPolicy"])
            service.loadBalancingMode = try fields["mode"]!.enumeration(Service.LoadBalancingMode.self)
        }
        if let families = keys["ipFamilies"] { _ = try families.enumeration(IPFamilies.self) }
        if let endpoints = keys["endpoints"] {
            for (uid, endpoint) in try endpoints.mappingEntries() {
                let fields = try endpoint.mapping(allowed: ["workloadUid", "port", "status"])
                service.endpoints[uid] = try fields["port"]?.portMap() ?? [:]
            }
        }
        return service
    }

    enum IPFamilies: String { case dual = "Dual", ipv4 = "IPv4", ipv6 = "IPv6" }

    // MARK: Policies

    static func policy(_ field: Field) throws(LocalConfigError) -> Authorization {
        let keys = try field.mapping(
            allowed: ["name", "namespace", "scope", "action", "rules", "dryRun"],
            required: ["name", "namespace", "scope", "action", "rules"]
        )
        let rules = try keys["rules"]!.list().map { (rule) throws(LocalConfigError) in
            try rule.list().map { (clause) throws(LocalConfigError) in try clause.list().map(Self.match) }
        }
        return Authorization(
            name: try keys["name"]!.string(), namespace: try keys["namespace"]!.string(),
            scope: try keys["scope"]!.enumeration(Authorization.Scope.self), action: try keys["action"]!.enumeration(Authorization.Action.self),
            dryRun: try keys["dryRun"]?.bool() ?? false, rules: rules
        )
    }

    static func match(_ field: Field) throws(LocalConfigError) -> Authorization.Match {
        // ztunnel ignores unknown keys inside a match (RbacMatch has no deny_unknown_fields).
        let keys = try field.mapping(allowed: nil)
        var match = Authorization.Match()
        func strings(_ key: String) throws(LocalConfigError) -> [Authorization.StringMatch] {
            try keys[key]?.list().map { (item) throws(LocalConfigError) in try item.stringMatch() } ?? []
        }
        func accounts(_ key: String) throws(LocalConfigError) -> [Authorization.ServiceAccountMatch] {
            try keys[key]?.list().map { (item) throws(LocalConfigError) in
                let fields = try item.mapping(allowed: nil, required: ["namespace", "serviceAccount"])
                return Authorization.ServiceAccountMatch(namespace: try fields["namespace"]!.string(), serviceAccount: try fields["serviceAccount"]!.string())
            } ?? []
        }
        func networks(_ key: String) throws(LocalConfigError) -> [IPNetwork] {
            try keys[key]?.list().map { (item) throws(LocalConfigError) in
                let text = try item.string()
                guard text.contains("/"), let network = IPNetwork(text) else { throw item.error("\"\(text)\" is not an IP block with a prefix length") }
                return network
            } ?? []
        }
        func ports(_ key: String) throws(LocalConfigError) -> [UInt16] {
            try keys[key]?.list().map { (item) throws(LocalConfigError) in try item.port() } ?? []
        }
        match.namespaces = try strings("namespaces")
        match.notNamespaces = try strings("notNamespaces")
        match.principals = try strings("principals")
        match.notPrincipals = try strings("notPrincipals")
        match.serviceAccounts = try accounts("serviceAccounts")
        match.notServiceAccounts = try accounts("notServiceAccounts")
        match.sourceIPs = try networks("sourceIps")
        match.notSourceIPs = try networks("notSourceIps")
        match.destinationIPs = try networks("destinationIps")
        match.notDestinationIPs = try networks("notDestinationIps")
        match.destinationPorts = try ports("destinationPorts")
        match.notDestinationPorts = try ports("notDestinationPorts")
        return match
    }
}

/// A config error with where it is: line and column (1-based) and the field path.
public struct LocalConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public var line: Int?
    public var column: Int?
    public var path: String
    public var message: String

    public var description: String {
        var text = ""
        if let line { text += "line \(line)" + (self.column.map { ", column \($0)" } ?? "") + ": " }
        if !self.path.isEmpty { text += "\(self.path): " }
        return text + self.message
    }
}

/// A YAML node with the path that led to it, for errors that say where.
struct Field {
    let node: Node
    let path: String

    init(_ node: Node, _ path: String) {
        self.node = node
        self.path = path
    }

    func error(_ message: String) -> LocalConfigError {
        LocalConfigError(line: self.node.mark?.line, column: self.node.mark?.column, path: self.path, message: message)
    }

    private func child(_ key: String) -> String { self.path.isEmpty ? key : "\(self.path).\(key)" }

    /// The entries of a mapping, keys checked against `allowed` (nil: any) and `required`.
    func mapping(allowed: Set<String>?, required: Set<String> = []) throws(LocalConfigError) -> [String: Field] {
        guard case .mapping(let mapping) = self.node else { throw self.error("expected a mapping") }
        var result: [String: Field] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw Field(key, self.path).error("mapping keys must be strings") }
            if let allowed, !allowed.contains(name) {
                throw Field(key, self.child(name)).error("unknown field `\(name)`, expected one of \(allowed.sorted().map { "`\($0)`" }.joined(separator: ", "))")
            }
            guard result[name] == nil else { throw Field(key, self.child(name)).error("duplicate field `\(name)`") }
            result[name] = Field(value, self.child(name))
        }
        for name in required.sorted() where result[name] == nil {
            throw self.error("missing field `\(name)`")
        }
        return result
    }

    /// The entries of a mapping in order (for maps with data keys such as `services`).
    func mappingEntries() throws(LocalConfigError) -> [(String, Field)] {
        if self.node.null != nil { return [] }
        guard case .mapping(let mapping) = self.node else { throw self.error("expected a mapping") }
        var entries: [(String, Field)] = []
        for (key, value) in mapping {
            guard let name = key.string else { throw Field(key, self.path).error("mapping keys must be scalars") }
            entries.append((name, Field(value, self.child(name))))
        }
        return entries
    }

    func list() throws(LocalConfigError) -> [Field] {
        if self.node.null != nil, self.node.tag.description == "tag:yaml.org,2002:null", case .scalar(let scalar) = self.node, scalar.string.isEmpty {
            return []
        }
        guard case .sequence(let sequence) = self.node else { throw self.error("expected a list") }
        return sequence.enumerated().map { Field($1, "\(self.path)[\($0)]") }
    }

    func string() throws(LocalConfigError) -> String {
        guard case .scalar(let scalar) = self.node, self.node.null == nil || !scalar.string.isEmpty else {
            throw self.error("expected a string")
        }
        return scalar.string
    }

    func bool() throws(LocalConfigError) -> Bool {
        guard case .scalar = self.node, let value = self.node.bool else { throw self.error("expected true or false") }
        return value
    }

    func integer(in range: ClosedRange<Int>) throws(LocalConfigError) -> Int {
        guard case .scalar(let scalar) = self.node, scalar.style == .plain, let value = self.node.int else {
            throw self.error("expected an integer")
        }
        guard range.contains(value) else { throw self.error("\(value) is outside \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    func port() throws(LocalConfigError) -> UInt16 { UInt16(try self.integer(in: 0...65535)) }

    func ip() throws(LocalConfigError) -> IPAddress {
        let text = try self.string()
        guard let address = IPAddress(text) else { throw self.error("\"\(text)\" is not an IP address") }
        return address
    }

    func enumeration<T: RawRepresentable>(_ type: T.Type) throws(LocalConfigError) -> T where T.RawValue == String {
        let text = try self.string()
        guard let value = T(rawValue: text) else { throw self.error("unknown variant `\(text)`") }
        return value
    }

    /// Service port → target port, integer keys and values.
    func portMap() throws(LocalConfigError) -> [UInt16: UInt16] {
        var ports: [UInt16: UInt16] = [:]
        if self.node.null != nil { return ports }
        guard case .mapping(let mapping) = self.node else { throw self.error("expected a map of service port to target port") }
        for (key, value) in mapping {
            let servicePort = try Field(key, self.path).port()
            ports[servicePort] = try Field(value, "\(self.path).\(servicePort)").port()
        }
        return ports
    }

    /// `!Exact "x"`, `!Prefix "x"`, `!Suffix "x"`, `!Presence []` (or `{Exact: x}`).
    func stringMatch() throws(LocalConfigError) -> Authorization.StringMatch {
        let tag = self.node.tag.description
        func make(_ kind: String, _ value: Field?) throws(LocalConfigError) -> Authorization.StringMatch {
            switch kind {
            case "Exact": return .exact(try value?.string() ?? "")
            case "Prefix": return .prefix(try value?.string() ?? "")
            case "Suffix": return .suffix(try value?.string() ?? "")
            case "Presence": return .presence
            default: throw self.error("unknown string match `\(kind)`, expected !Exact, !Prefix, !Suffix or !Presence")
            }
        }
        if tag.hasPrefix("!") {
            var value: Field?
            if case .scalar = self.node { value = self }
            return try make(String(tag.dropFirst()), value)
        }
        if case .mapping(let mapping) = self.node, mapping.count == 1, let (key, value) = mapping.first, let kind = key.string {
            return try make(kind, Field(value, self.path))
        }
        throw self.error("a string match must be a YAML tag such as !Exact \"value\"")
    }
}
