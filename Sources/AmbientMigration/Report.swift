/// Something the user must know: an input problem, or a migration hazard.
public struct Diagnostic: Hashable, Sendable, Codable {
    /// Ordered by how much it matters.
    public enum Severity: String, Hashable, Sendable, Codable, Comparable, CaseIterable {
        /// Worth knowing; nothing breaks.
        case note
        /// Needs a decision or a manual step.
        case warning
        /// Traffic breaks if the migration goes ahead as is (an ALLOW policy that would deny
        /// everything, a DENY policy whose HTTP rules would vanish).
        case critical
        /// The input could not be read (invalid YAML, not a Kubernetes object).
        case error

        private var rank: Int { Self.allCases.firstIndex(of: self)! }
        public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rank < rhs.rank }
    }

    public var severity: Severity
    public var resource: ResourceID?
    public var location: SourceLocation?
    public var message: String

    public init(_ severity: Severity, resource: ResourceID? = nil, location: SourceLocation? = nil, _ message: String) {
        self.severity = severity
        self.resource = resource
        self.location = location
        self.message = message
    }
}

/// Who enforces or applies a resource once the sidecars are gone.
public enum Placement: String, Hashable, Sendable, Codable, CaseIterable {
    /// The node proxy (ztunnel) enforces it: L4 identity, namespace, IP block and port rules,
    /// and PeerAuthentication.
    case nodeProxy = "node-proxy"
    /// Needs a waypoint proxy: HTTP attributes, JWT, routing, traffic policy, L7 telemetry,
    /// egress control.
    case waypoint
    /// Applies at an ingress gateway, which keeps its Envoy: no waypoint needed.
    case ingressGateway = "ingress-gateway"
    /// Nothing to enforce on its own (DestinationRule subsets only, an existing waypoint).
    case unaffected
    /// Has no effect in ambient mode (Sidecar).
    case notUsed = "not-used"
    /// A kind the analysis does not understand; listed, not analysed.
    case unknown
}

/// The analysis of one resource.
public struct Finding: Hashable, Sendable, Codable {
    public var resource: ResourceID
    public var apiVersion: String
    public var location: SourceLocation
    public var placement: Placement
    /// Why, one entry per deciding attribute (`to.operation.methods [GET, POST]`).
    public var reasons: [String]
    /// The Services it applies to, as `namespace/name`.
    public var services: [String]
    /// Where its waypoint goes, for ``Placement/waypoint`` findings that need a new one.
    public var waypointNamespace: String?

    public init(
        resource: ResourceID, apiVersion: String, location: SourceLocation, placement: Placement,
        reasons: [String], services: [String] = [], waypointNamespace: String? = nil
    ) {
        self.resource = resource
        self.apiVersion = apiVersion
        self.location = location
        self.placement = placement
        self.reasons = reasons
        self.services = services
        self.waypointNamespace = waypointNamespace
    }
}

/// What the input held besides policies and routes.
public struct Inventory: Hashable, Sendable, Codable {
    public var namespaces: [String] = []
    public var services: Int = 0
    public var workloads: Int = 0
    public var files: [String] = []

    public init() {}
}

/// The full result: one finding per policy or route, the problems found, and the plan.
public struct MigrationReport: Sendable, Codable {
    public var inventory: Inventory
    public var findings: [Finding]
    public var diagnostics: [Diagnostic]
    public var plan: MigrationPlan

    public init(inventory: Inventory, findings: [Finding], diagnostics: [Diagnostic], plan: MigrationPlan) {
        self.inventory = inventory
        self.findings = findings
        self.diagnostics = diagnostics
        self.plan = plan
    }

    /// The finding for a resource, if it was analysed.
    public func finding(_ kind: String, _ namespace: String, _ name: String) -> Finding? {
        self.findings.first { $0.resource == ResourceID(kind: kind, namespace: namespace, name: name) }
    }

    /// Whether any input could not be read.
    public var hasErrors: Bool { self.diagnostics.contains { $0.severity == .error } }
}
