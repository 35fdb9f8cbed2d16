public import InternetAddress

/// An L4 authorization policy as ztunnel enforces it (`proto/authorization.proto`,
/// `src/rbac.rs`): istiod's AuthorizationPolicy reduced to connection attributes.
///
/// Matching: rules are OR'd; within a rule all clauses are AND'd; within a clause the
/// matches are OR'd; within a match every non-empty field must hold (its list OR'd) and
/// every `not*` list must contain no match. A policy with no rules matches nothing; a rule
/// with no clauses matches everything.
public struct Authorization: Hashable, Sendable {
    /// Which workloads a policy applies to.
    public enum Scope: String, Hashable, Sendable, Codable {
        /// Every workload (policies in the root namespace).
        case global = "Global"
        /// Workloads in the policy's namespace (a selector-less policy).
        case namespace = "Namespace"
        /// Workloads that list `namespace/name` in their `authorizationPolicies`.
        case workloadSelector = "WorkloadSelector"
    }

    /// ALLOW or DENY (istiod sends ztunnel nothing else).
    public enum Action: String, Hashable, Sendable, Codable {
        case allow = "Allow"
        case deny = "Deny"
    }

    public var name: String
    public var namespace: String
    public var scope: Scope
    public var action: Action
    /// Only logged, never enforced.
    public var dryRun: Bool
    /// rules → clauses → matches.
    public var rules: [[[Match]]]

    public init(name: String, namespace: String, scope: Scope, action: Action, dryRun: Bool = false, rules: [[[Match]]]) {
        self.name = name
        self.namespace = namespace
        self.scope = scope
        self.action = action
        self.dryRun = dryRun
        self.rules = rules
    }

    /// `namespace/name`, how workloads reference selector-scoped policies.
    public var key: String { "\(self.namespace)/\(self.name)" }

    /// One match: every non-empty positive list must hold, no negative list may match.
    public struct Match: Hashable, Sendable {
        public var namespaces: [StringMatch] = []
        public var notNamespaces: [StringMatch] = []
        public var principals: [StringMatch] = []
        public var notPrincipals: [StringMatch] = []
        public var serviceAccounts: [ServiceAccountMatch] = []
        public var notServiceAccounts: [ServiceAccountMatch] = []
        public var sourceIPs: [IPNetwork] = []
        public var notSourceIPs: [IPNetwork] = []
        public var destinationIPs: [IPNetwork] = []
        public var notDestinationIPs: [IPNetwork] = []
        public var destinationPorts: [UInt16] = []
        public var notDestinationPorts: [UInt16] = []

        public init() {}

        var isEmpty: Bool { self == Match() }

        func matches(_ connection: ConnectionAttributes) -> Bool {
            let principal = connection.source?.principal
            let namespace = connection.source?.namespace
            func any(_ list: [StringMatch], _ value: String?) -> Bool { list.contains { $0.matches(value) } }
            func accounts(_ list: [ServiceAccountMatch]) -> Bool {
                guard let source = connection.source else { return false }
                return list.contains { $0.namespace == source.namespace && $0.serviceAccount == source.serviceAccount }
            }
            func ips(_ list: [IPNetwork], _ address: IPAddress?) -> Bool {
                guard let address else { return false }
                return list.contains { $0.contains(address) }
            }
            if !self.namespaces.isEmpty, !any(self.namespaces, namespace) { return false }
            if any(self.notNamespaces, namespace) { return false }
            if !self.principals.isEmpty, !any(self.principals, principal) { return false }
            if any(self.notPrincipals, principal) { return false }
            if !self.serviceAccounts.isEmpty, !accounts(self.serviceAccounts) { return false }
            if accounts(self.notServiceAccounts) { return false }
            if !self.sourceIPs.isEmpty, !ips(self.sourceIPs, connection.sourceIP) { return false }
            if ips(self.notSourceIPs, connection.sourceIP) { return false }
            if !self.destinationIPs.isEmpty, !ips(self.destinationIPs, connection.destinationIP) { return false }
            if ips(self.notDestinationIPs, connection.destinationIP) { return false }
            if !self.destinationPorts.isEmpty, !self.destinationPorts.contains(connection.destinationPort) { return false }
            if self.notDestinationPorts.contains(connection.destinationPort) { return false }
            return true
        }
    }

    /// A string match (`Exact`, `Prefix`, `Suffix`, `Presence`); Istio's `*`, `prefix*` and
    /// `*suffix` arrive as these.
    public enum StringMatch: Hashable, Sendable {
        case exact(String)
        case prefix(String)
        case suffix(String)
        /// Any value at all (an identity is present).
        case presence

        /// Whether `value` matches; an absent value never does.
        public func matches(_ value: String?) -> Bool {
            guard let value else { return false }
            switch self {
            case .exact(let expected): return value == expected
            case .prefix(let prefix): return value.hasPrefix(prefix)
            case .suffix(let suffix): return value.hasSuffix(suffix)
            case .presence: return true
            }
        }
    }

    /// `{namespace, serviceAccount}` equality (the trust domain is ignored).
    public struct ServiceAccountMatch: Hashable, Sendable, Codable {
        public var namespace: String
        public var serviceAccount: String

        public init(namespace: String, serviceAccount: String) {
            self.namespace = namespace
            self.serviceAccount = serviceAccount
        }
    }

    /// Whether the connection matches this policy's rules.
    public func matches(_ connection: ConnectionAttributes) -> Bool {
        self.rules.contains { clauses in
            clauses.allSatisfy { matches in matches.contains { !$0.isEmpty && $0.matches(connection) } }
        }
    }

    /// Whether this policy applies to `workload`.
    public func applies(to workload: Workload) -> Bool {
        switch self.scope {
        case .global: true
        case .namespace: self.namespace == workload.namespace
        case .workloadSelector: workload.authorizationPolicies.contains(self.key)
        }
    }
}

/// What L4 authorization sees of a connection (all connection-level).
public struct ConnectionAttributes: Hashable, Sendable {
    /// The peer's verified identity; `nil` for plaintext.
    public var source: PeerIdentity?
    /// The TCP peer address of the inbound connection.
    public var sourceIP: IPAddress?
    /// The local pod address.
    public var destinationIP: IPAddress?
    /// The resolved target port.
    public var destinationPort: UInt16

    public init(source: PeerIdentity?, sourceIP: IPAddress?, destinationIP: IPAddress?, destinationPort: UInt16) {
        self.source = source
        self.sourceIP = sourceIP
        self.destinationIP = destinationIP
        self.destinationPort = destinationPort
    }
}

/// A SPIFFE identity broken into what policies match on.
public struct PeerIdentity: Hashable, Sendable {
    public var trustDomain: String { didSet { self.principal = Self.principal(self.trustDomain, self.namespace, self.serviceAccount) } }
    public var namespace: String { didSet { self.principal = Self.principal(self.trustDomain, self.namespace, self.serviceAccount) } }
    public var serviceAccount: String { didSet { self.principal = Self.principal(self.trustDomain, self.namespace, self.serviceAccount) } }

    public init(trustDomain: String, namespace: String, serviceAccount: String) {
        self.trustDomain = trustDomain
        self.namespace = namespace
        self.serviceAccount = serviceAccount
        self.principal = Self.principal(trustDomain, namespace, serviceAccount)
    }

    /// `td/ns/<ns>/sa/<sa>`: the SPIFFE ID without `spiffe://`, what `principals` compare to.
    /// Built once, not per policy match.
    public private(set) var principal: String

    private static func principal(_ trustDomain: String, _ namespace: String, _ serviceAccount: String) -> String {
        "\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)"
    }

    /// `spiffe://td/ns/<ns>/sa/<sa>`.
    public var uri: String { "spiffe://" + self.principal }
}

/// The outcome of L4 authorization.
public enum AuthorizationDecision: Hashable, Sendable {
    case allow
    /// An enforced DENY policy matched (`ExplicitlyDenied`).
    case explicitlyDenied(policy: String)
    /// ALLOW policies exist and none matched (`NotAllowed`).
    case notAllowed

    public var isAllowed: Bool { self == .allow }
}

extension Array where Element == Authorization {
    /// ztunnel's `assert_rbac` over the policies that apply to `workload`: dry-run DENY
    /// matches are only reported; an enforced DENY that matches rejects; with no enforced
    /// ALLOW policy the connection is allowed; otherwise some ALLOW must match.
    /// Returns the decision and the keys of the dry-run policies that matched.
    public func evaluate(_ connection: ConnectionAttributes, for workload: Workload) -> (decision: AuthorizationDecision, dryRunMatches: [String]) {
        let applicable = self.filter { $0.applies(to: workload) }
        let dryRun = applicable.filter { $0.dryRun && $0.matches(connection) }.map(\.key)
        if let deny = applicable.first(where: { !$0.dryRun && $0.action == .deny && $0.matches(connection) }) {
            return (.explicitlyDenied(policy: deny.key), dryRun)
        }
        let allows = applicable.filter { !$0.dryRun && $0.action == .allow }
        if allows.isEmpty || allows.contains(where: { $0.matches(connection) }) { return (.allow, dryRun) }
        return (.notAllowed, dryRun)
    }
}

