internal import Netlink

#if canImport(Glibc)
internal import Glibc
#endif

/// Puts one pod's traffic into the node proxy and takes it out again: istio-cni's
/// `CreateInpodRules`/`DeleteInpodRules` for one network namespace, as a lifecycle.
///
/// - ``apply(in:)`` installs ``InPodRouting`` first, then ``InPodRules`` with
///   `iptables-restore --noflush`, for IPv4 and (unless disabled) IPv6. It is idempotent:
///   when what is installed already matches, nothing is touched; when there is residue that
///   does not match (an older or damaged install), it is removed first. A failed apply
///   removes everything it may have installed before throwing, so a pod is never left
///   half-captured.
/// - ``verify(in:)`` compares `iptables-save` output and rtnetlink dumps with what should
///   be installed.
/// - ``remove(in:)`` deletes what is installed, derived from `iptables-save` rather than from
///   memory (so it works after a node-agent restart), and leaves the namespace's
///   `iptables-save` and `ip rule` output as they were before the first apply.
/// - ``inspect(in:backend:)`` re-derives the configuration of an existing install: how a
///   restarted node agent recovers its state from the kernel.
///
/// All kernel work runs on a ``NetworkNamespace`` dedicated thread.
public struct InPodRedirection: Sendable {
    /// Everything that varies.
    public struct Configuration: Hashable, Sendable {
        /// How IPv6 is handled.
        public enum IPv6Mode: Hashable, Sendable {
            /// Install IPv6 rules when IPv6 is enabled in the pod, skip them otherwise (Istio). Default.
            case whenEnabled
            /// Require IPv6: a pod with IPv6 disabled is an error (``RedirectError/Kind/ipv6Disabled``).
            case required
            /// IPv4 only.
            case disabled
        }

        /// The rule variant (DNS capture, ingress bypass, virtual interfaces, constants).
        public var rules: InPodRules.Configuration
        /// IPv6 handling. Default ``IPv6Mode/whenEnabled``.
        public var ipv6: IPv6Mode = .whenEnabled
        /// The iptables implementation (detect it once on the host with ``IptablesBackend/detect(forced:)``).
        public var backend: IptablesBackend
        /// Directory for pod-scoped xtables lock files (legacy backend only). Default `/tmp`.
        public var lockDirectory = "/tmp"

        /// A configuration with Istio's default rules.
        public init(backend: IptablesBackend, rules: InPodRules.Configuration = .init()) {
            self.backend = backend
            self.rules = rules
        }
    }

    /// What ``apply(in:)`` did.
    public enum ApplyOutcome: Hashable, Sendable {
        /// Nothing was installed before; now everything is.
        case installed
        /// Everything was already installed as configured; nothing changed.
        case unchanged
        /// A different or damaged install was replaced.
        case replaced
    }

    /// What ``inspect(in:backend:)`` found.
    public enum InstalledState: Hashable, Sendable {
        /// No trace of redirection.
        case absent
        /// A complete install of this rule configuration.
        case installed(InPodRules.Configuration)
        /// Traces that match no configuration (the strings say what).
        case damaged([String])
    }

    /// The configuration.
    public let configuration: Configuration

    /// Creates a redirection for `configuration`.
    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    static let ownedChains: Set<String> = [InPodRules.prerouting, InPodRules.output]

    // MARK: Lifecycle

    /// Installs routing and rules in `namespace`.
    @discardableResult
    public func apply(in namespace: NetworkNamespace) async throws -> ApplyOutcome {
        let configuration = self.configuration
        return try await Self.exclusively(in: namespace) { try Self.apply(configuration, lockFile: Self.lockFile(configuration, namespace)) }
    }

    /// The differences between what is installed in `namespace` and what should be; empty
    /// when the install is exact.
    public func verify(in namespace: NetworkNamespace) async throws -> [String] {
        let configuration = self.configuration
        return try await Self.exclusively(in: namespace) {
            let families = try Self.families(configuration)
            let socket = try Self.routeSocket()
            return try families.flatMap { family in
                try Self.drift(configuration, family: family, lockFile: Self.lockFile(configuration, namespace), socket: socket)
            }
        }
    }

    /// Removes routing and rules from `namespace`.
    public func remove(in namespace: NetworkNamespace) async throws {
        let configuration = self.configuration
        try await Self.exclusively(in: namespace) { try Self.removeAll(configuration, lockFile: Self.lockFile(configuration, namespace)) }
    }

    /// Re-derives the rule configuration installed in `namespace` (for recovery after a
    /// node-agent restart). Only the variant (DNS capture, ingress bypass, virtual
    /// interfaces) is derived; marks and ports are taken to be Istio's.
    public static func inspect(in namespace: NetworkNamespace, backend: IptablesBackend) async throws -> InstalledState {
        try await Self.exclusively(in: namespace) {
            let snapshot = try backend.save(family: .ipv4, lockFile: nil)
            guard snapshot.hasResidue(of: Self.ownedChains) else { return .absent }
            let derived = Self.derive(from: snapshot)
            var probe = Configuration(backend: backend, rules: derived)
            probe.ipv6 = .disabled
            let problems = try Self.drift(probe, family: .ipv4, lockFile: nil, socket: Self.routeSocket())
            return problems.isEmpty ? .installed(derived) : .damaged(problems)
        }
    }

    /// Runs `body` on a dedicated thread inside `namespace`, holding the namespace's
    /// ``NamespaceExclusion`` entry: every operation here goes through this.
    private static func exclusively<Result: Sendable>(
        in namespace: NetworkNamespace, _ body: @escaping @Sendable () throws -> Result
    ) async throws -> Result {
        try await namespace.run { try NamespaceExclusion.exclusively(namespace, body) }
    }

    // MARK: On the namespace thread

    private static func apply(_ configuration: Configuration, lockFile: String) throws -> ApplyOutcome {
        let families = try Self.families(configuration)
        let socket = try Self.routeSocket()
        var residue = false
        var drifted = false
        for family in families {
            let snapshot = try configuration.backend.save(family: family, lockFile: lockFile)
            residue = residue || snapshot.hasResidue(of: Self.ownedChains)
            drifted = try drifted || !Self.drift(configuration, family: family, snapshot: snapshot, socket: socket).isEmpty
        }
        if !drifted { return .unchanged }
        do {
            if residue { try Self.removeRules(configuration, families: families, lockFile: lockFile) }
            // Routing first (istio-cni order): the rules' connmark only works with the fwmark rule in place.
            for family in families { try InPodRouting.install(family, constants: configuration.rules.constants, on: socket) }
            for family in families {
                let payload = IptablesRenderer.restorePayload(InPodRules.ruleSet(configuration.rules, family: family))
                try configuration.backend.restore(payload, family: family, lockFile: lockFile)
            }
        } catch {
            // Roll back everything, the other family included: a pod is captured fully or not at all.
            try? Self.removeAll(configuration, lockFile: lockFile)
            throw error
        }
        return residue ? .replaced : .installed
    }

    private static func removeAll(_ configuration: Configuration, lockFile: String) throws {
        let families: [InPodRules.Family] = InPodRules.Family.ipv6EnabledHere() || configuration.ipv6 == .required ? [.ipv4, .ipv6] : [.ipv4]
        try Self.removeRules(configuration, families: families, lockFile: lockFile)
        let socket = try Self.routeSocket()
        for family in families { try InPodRouting.remove(family, constants: configuration.rules.constants, on: socket) }
        if configuration.backend.kind == .legacy { unlink(lockFile) }
    }

    private static func removeRules(_ configuration: Configuration, families: [InPodRules.Family], lockFile: String) throws {
        for family in families {
            let snapshot = try configuration.backend.save(family: family, lockFile: lockFile)
            if let payload = snapshot.removalPayload(of: Self.ownedChains) {
                try configuration.backend.restore(payload, family: family, lockFile: lockFile)
            }
            guard configuration.backend.kind == .nft else { continue }
            // iptables-nft created the tables on first use and leaves them behind empty;
            // delete those that are empty now so the namespace looks as it did before.
            let touched = Set(InPodRules.ruleSet(configuration.rules, family: family).tables.map(\.name)).union(["mangle", "nat", "raw"])
            let after = try configuration.backend.save(family: family, lockFile: lockFile)
            let empty = after.emptyTables.filter(touched.contains)
            guard !empty.isEmpty else { continue }
            let socket: NetlinkSocket
            do { socket = try NetlinkSocket(bus: .netfilter) } catch { throw RedirectError(error, "opening NETLINK_NETFILTER") }
            for table in empty {
                do {
                    try NFTables.deleteTable(named: table, family: family == .ipv4 ? .ip : .ip6, on: socket)
                } catch where error.isNotFound {
                } catch {
                    throw RedirectError(error, "deleting the empty \(table) table")
                }
            }
        }
    }

    private static func families(_ configuration: Configuration) throws(RedirectError) -> [InPodRules.Family] {
        switch configuration.ipv6 {
        case .disabled:
            return [.ipv4]
        case .whenEnabled:
            return InPodRules.Family.ipv6EnabledHere() ? [.ipv4, .ipv6] : [.ipv4]
        case .required:
            guard InPodRules.Family.ipv6EnabledHere() else {
                throw RedirectError(.ipv6Disabled, "IPv6 rules were required but net.ipv6.conf.lo.disable_ipv6 is 1 (or the kernel has no IPv6)")
            }
            return [.ipv4, .ipv6]
        }
    }

    private static func drift(
        _ configuration: Configuration, family: InPodRules.Family, lockFile: String?, socket: NetlinkSocket
    ) throws -> [String] {
        try Self.drift(configuration, family: family, snapshot: configuration.backend.save(family: family, lockFile: lockFile), socket: socket)
    }

    /// What differs from the expected install of `family`: missing or extra rules (in each
    /// chain, in order, compared in `iptables-save` form), missing chains, routing.
    private static func drift(
        _ configuration: Configuration, family: InPodRules.Family, snapshot: IptablesSnapshot, socket: NetlinkSocket
    ) throws -> [String] {
        var problems: [String] = []
        let expected = InPodRules.ruleSet(configuration.rules, family: family)
        let expectedTables = Set(expected.tables.map(\.name))
        for table in expected.tables {
            let installed = snapshot[table: table.name]
            for chain in table.newChains where !(installed?.chains.contains { $0.name == chain } ?? false) {
                problems.append("\(family) \(table.name): chain \(chain) missing")
            }
            let chains = Set(table.rules.map(\.chain))
            for chain in chains.sorted() {
                let want = table.rules.filter { $0.chain == chain }
                    .map { IptablesRenderer.savedForm(IptablesRule($0.chain, $0.matches, $0.target)) }
                var have = installed?.rules(in: chain) ?? []
                if !Self.ownedChains.contains(chain) {
                    have = have.filter { IptablesSnapshot.jumpTarget(of: $0).map(Self.ownedChains.contains) ?? false }
                }
                if want != have { problems.append("\(family) \(table.name) \(chain): expected \(want), installed \(have)") }
            }
        }
        for table in snapshot.tables where !expectedTables.contains(table.name) {
            let stray = IptablesSnapshot(tables: [table]).hasResidue(of: Self.ownedChains)
            if stray { problems.append("\(family) \(table.name): unexpected Istio chains or jumps") }
        }
        let routing = try InPodRouting.installed(family, constants: configuration.rules.constants, on: socket)
        if routing.rules != 1 { problems.append("\(family): \(routing.rules) copies of \(InPodRouting.rule(family, constants: configuration.rules.constants))") }
        if !routing.route { problems.append("\(family): local route in table \(configuration.rules.constants.routingTable) missing") }
        return problems
    }

    /// The rule variant the snapshot's rules were rendered from.
    static func derive(from snapshot: IptablesSnapshot) -> InPodRules.Configuration {
        var configuration = InPodRules.Configuration()
        let nat = snapshot[table: "nat"]?.rules ?? []
        let c = configuration.constants
        configuration.captureDNS = nat.contains { $0.contains("--dport 53 ") && $0.contains("REDIRECT") }
        configuration.bypassInboundCapture = !nat.contains { $0.hasPrefix("-A \(InPodRules.prerouting) ") && $0.hasSuffix("--to-ports \(c.inboundPort)") }
        configuration.rerouteVirtualInterfaces = nat.compactMap { rule -> String? in
            guard rule.hasPrefix("-A \(InPodRules.prerouting) -i "), rule.hasSuffix("--to-ports \(c.outboundPort)") else { return nil }
            return rule.split(separator: " ").dropFirst(3).first.map(String.init)
        }
        return configuration
    }

    static func routeSocket() throws(RedirectError) -> NetlinkSocket {
        do { return try NetlinkSocket(bus: .route) } catch { throw RedirectError(error, "opening NETLINK_ROUTE") }
    }

    static func lockFile(_ configuration: Configuration, _ namespace: NetworkNamespace) -> String {
        "\(configuration.lockDirectory)/xtables-netns-\(namespace.inode).lock"
    }
}

extension IptablesSnapshot {
    init(tables: [Table]) {
        self.init(parsing: "")
        self.tables = tables
    }
}
