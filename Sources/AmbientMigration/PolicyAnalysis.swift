/// The analysis of one resource before planning: its finding, what to warn about, and
/// whether it needs a `targetRefs` twin at a waypoint.
struct Analysis {
    var finding: Finding
    var diagnostics: [Diagnostic] = []
    /// Where a selector-based policy applies, for its twin; `nil` when no twin is needed.
    var twin: Targets?
}

/// What a selector-based policy applies to, resolved against the input.
enum Targets {
    /// No selector in the root namespace: every workload of the mesh.
    case meshWide
    /// No selector: every workload of the namespace.
    case namespace([Cluster.Service])
    /// A selector: the pods it matched and the Services that select them.
    case workloads([Cluster.Workload], [Cluster.Service])

    var services: [Cluster.Service] {
        switch self {
        case .meshWide: return []
        case .namespace(let services), .workloads(_, let services): return services
        }
    }
}

/// Classifies the `security.istio.io` kinds and Telemetry the way istiod converts them
/// for ztunnel (`pilot/pkg/serviceregistry/ambient/authorization.go`).
enum PolicyAnalysis {
    /// `from.source` fields ztunnel enforces (`authorization.go`, `handleRule`). Every other
    /// field counts as HTTP: `requestPrincipals`, `remoteIpBlocks`, `trustDomains` and their
    /// `not` forms (`httpSources`), and any field this list does not know.
    static let l4SourceFields: Set<String> = [
        "principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
        "serviceAccounts", "notServiceAccounts",
    ]
    /// `to.operation` fields ztunnel enforces; `hosts`, `methods`, `paths` and their `not`
    /// forms are HTTP (`httpOperations`).
    static let l4OperationFields: Set<String> = ["ports", "notPorts"]
    /// `when` keys ztunnel enforces (`l4WhenAttributes`).
    static let l4WhenKeys: Set<String> = ["source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"]

    // MARK: Targets

    /// Resolves `spec.selector.matchLabels` (or its absence) to workloads and Services.
    static func targets(of manifest: Manifest, in cluster: Cluster) -> Targets {
        let selector = manifest.spec["selector"]?["matchLabels"]?.stringMap ?? [:]
        if selector.isEmpty {
            if manifest.namespace == cluster.rootNamespace { return .meshWide }
            // Not headless Services (their traffic goes to pod IPs, past the waypoint), nor
            // those of gateway or waypoint pods.
            return .namespace(cluster.services(in: manifest.namespace).filter { !$0.headless && !cluster.isInfrastructure($0) })
        }
        let workloads = cluster.workloads(matching: selector, in: manifest.namespace)
        // Headless Services carry traffic to pod IPs, which never reaches a Service's waypoint.
        return .workloads(workloads, cluster.services(selecting: workloads).filter { !$0.headless })
    }

    /// `spec.targetRefs` (or the older `spec.targetRef`), if the policy uses them.
    static func targetRefs(of manifest: Manifest) -> [YAMLValue]? {
        if let refs = manifest.spec["targetRefs"]?.items, !refs.isEmpty { return refs }
        if let ref = manifest.spec["targetRef"], ref.entries != nil { return [ref] }
        return nil
    }

    /// Placement of a resource that already uses `targetRefs`.
    static func attached(_ manifest: Manifest, refs: [YAMLValue], cluster: Cluster) -> Finding {
        var waypoint = false
        var names: [String] = []
        var services: [String] = []
        for ref in refs {
            let kind = ref["kind"]?.string ?? ""
            let name = ref["name"]?.scalarText ?? ""
            names.append("\(kind) \(name)")
            switch kind {
            case "Service", "ServiceEntry":
                waypoint = true
                services.append("\(manifest.namespace)/\(name)")
            case "GatewayClass":
                waypoint = waypoint || name == "istio-waypoint"
            case "Gateway":
                waypoint = waypoint || (cluster.gateways["\(manifest.namespace)/\(name)"]?.isWaypoint ?? false)
            default:
                break
            }
        }
        let list = names.joined(separator: ", ")
        return Finding(
            resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location,
            placement: waypoint ? .waypoint : .ingressGateway,
            reasons: [waypoint ? "already attached through targetRefs (\(list)): enforced by a waypoint, nothing to rewrite"
                : "attached through targetRefs to \(list): applies at that gateway"],
            services: services, waypointNamespace: services.isEmpty ? nil : manifest.namespace
        )
    }

    /// A policy that already uses `targetRefs`, or whose selector picks gateway pods, needs
    /// no migration: its analysis; `nil` for a selector-based policy on workloads.
    static func placedElsewhere(_ manifest: Manifest, cluster: Cluster) -> Analysis? {
        if let refs = Self.targetRefs(of: manifest) {
            return Analysis(finding: Self.attached(manifest, refs: refs, cluster: cluster))
        }
        let selector = manifest.spec["selector"]?["matchLabels"]?.stringMap ?? [:]
        if cluster.selectsGateway(selector, in: manifest.namespace) {
            return Analysis(finding: Self.gatewayFinding(manifest))
        }
        return nil
    }

    static func gatewayFinding(_ manifest: Manifest) -> Finding {
        Finding(
            resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location, placement: .ingressGateway,
            reasons: ["selects gateway pods (\(Self.describe(manifest.spec["selector"]?["matchLabels"]?.stringMap ?? [:]))), which keep their Envoy: unchanged"]
        )
    }

    static func describe(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func values(_ value: YAMLValue?) -> String {
        let items = value?.textList ?? []
        let shown = items.prefix(4).joined(separator: ", ")
        return items.count > 4 ? "[\(shown), …]" : "[\(shown)]"
    }

    // MARK: AuthorizationPolicy

    /// One rule's HTTP attributes and what ztunnel would be left with.
    struct RuleScan {
        var l4: [String] = []
        var l7: [String] = []
        /// A `from`, `to` or `when` clause made only of HTTP matches: without them the
        /// clause is empty and the rule can never match.
        var emptiedClause = false
    }

    static func scan(rule: YAMLValue, index: Int) -> RuleScan {
        var scan = RuleScan()
        func clause(_ name: String, _ field: String, l4: Set<String>) {
            guard let entries = rule[name]?.items, !entries.isEmpty else { return }
            var allEmptied = true
            for entry in entries {
                var kept = false
                for attribute in entry[field]?.entries ?? [] {
                    let text = "rules[\(index)].\(name).\(field).\(attribute.key) \(Self.values(attribute.value))"
                    if l4.contains(attribute.key) {
                        scan.l4.append(text)
                        kept = true
                    } else {
                        scan.l7.append(text)
                    }
                }
                if kept { allEmptied = false }
            }
            if allEmptied { scan.emptiedClause = true }
        }
        clause("from", "source", l4: Self.l4SourceFields)
        clause("to", "operation", l4: Self.l4OperationFields)
        // Each `when` condition is a clause of its own (istiod emits one match per
        // condition), so a single HTTP condition already leaves an empty clause.
        for condition in rule["when"]?.items ?? [] {
            let key = condition["key"]?.scalarText ?? "?"
            let text = "rules[\(index)].when \(key) \(Self.values(condition["values"] ?? condition["notValues"]))"
            if Self.l4WhenKeys.contains(key) {
                scan.l4.append(text)
            } else {
                scan.l7.append(text)
                scan.emptiedClause = true
            }
        }
        return scan
    }

    static func authorizationPolicy(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        if let placed = Self.placedElsewhere(manifest, cluster: cluster) { return placed }
        let action = manifest.spec["action"]?.scalarText ?? "ALLOW"
        let rules = manifest.spec["rules"]?.items ?? []
        let scans = rules.enumerated().map { Self.scan(rule: $0.element, index: $0.offset) }
        let l7 = scans.flatMap(\.l7)
        let targets = Self.targets(of: manifest, in: cluster)
        var analysis = Analysis(finding: Finding(
            resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location, placement: .nodeProxy, reasons: []
        ))
        analysis.diagnostics += Self.selectionWarnings(manifest, targets: targets, cluster: cluster)

        if action == "CUSTOM" || action == "AUDIT" {
            analysis.finding.reasons = ["action \(action): ztunnel enforces only ALLOW and DENY; \(action == "CUSTOM" ? "external authorization" : "audit logging") runs in Envoy"]
        } else if l7.isEmpty {
            analysis.finding.reasons = scans.flatMap(\.l4).isEmpty
                ? [rules.isEmpty ? "\(action) with no rules (\(action == "ALLOW" ? "allows nothing" : "denies nothing")): enforced by ztunnel as is" : "\(action), rules without attributes: enforced by ztunnel"]
                : scans.flatMap(\.l4)
            return analysis
        } else {
            analysis.finding.reasons = l7
            analysis.diagnostics += Self.droppedRuleWarnings(manifest, action: action, scans: scans, targets: targets)
        }
        analysis.finding.placement = .waypoint
        analysis.finding.services = targets.services.map(\.key)
        analysis.finding.waypointNamespace = manifest.namespace
        analysis.twin = targets
        return analysis
    }

    /// What ztunnel would do with the HTTP rules if the policy stayed selector-based.
    static func droppedRuleWarnings(_ manifest: Manifest, action: String, scans: [RuleScan], targets: Targets) -> [Diagnostic] {
        let twin = "\(manifest.name)-waypoint"
        let scope = Self.describe(targets)
        if action == "ALLOW" {
            let l7Rules = scans.indices.filter { !scans[$0].l7.isEmpty }
            let kept = scans.indices.filter { scans[$0].l7.isEmpty }
            let effect = kept.isEmpty
                ? "this policy then allows nothing and every connection to \(scope) is DENIED"
                : "only rules \(kept.map(String.init).joined(separator: ", ")) stay, and everything rules \(l7Rules.map(String.init).joined(separator: ", ")) allowed is DENIED"
            let fix: String
            if case .meshWide = targets {
                fix = "Mesh-wide, its HTTP rules hold only for Services behind a waypoint: \(twin) applies them at every waypoint; every namespace without one loses them (see manual work)."
            } else if targets.services.isEmpty {
                fix = "It selects no Service, so no twin can be generated (see the warning): rewrite it with targetRefs by hand before the pods restart without sidecars."
            } else {
                fix = "Before the pods restart without sidecars, apply \(twin) (targetRefs, enforced by the waypoint) and \(manifest.name)-via-waypoint (lets the waypoint reach the pods), then delete this policy."
            }
            return [Diagnostic(
                .critical, resource: manifest.id, location: manifest.location,
                "ALLOW policy with HTTP rules left selector-based: once the sidecars are gone ztunnel omits rules that match HTTP attributes (\"more restrictive than requested\"); \(effect). \(fix)"
            )]
        }
        return scans.enumerated().compactMap { index, scan in
            guard !scan.l7.isEmpty else { return nil }
            if scan.emptiedClause {
                return Diagnostic(
                    .critical, resource: manifest.id, location: manifest.location,
                    "DENY rule \(index) has a clause made only of HTTP attributes (\(scan.l7.joined(separator: "; "))): ztunnel drops them and the clause is left empty. Current istiod releases skip such a rule, so requests it denies today would be ALLOWED to \(scope); older releases matched it to every connection and DENIED all of them. Either way, apply \(twin) at the waypoint and delete this policy."
                )
            }
            return Diagnostic(
                .warning, resource: manifest.id, location: manifest.location,
                "DENY rule \(index): ztunnel drops its HTTP parts (\(scan.l7.joined(separator: "; "))) and keeps the L4 ones, so it would deny all of that traffic, more than intended. Apply \(twin) at the waypoint and delete this policy."
            )
        }
    }

    static func describe(_ targets: Targets) -> String {
        switch targets {
        case .meshWide: return "every workload of the mesh"
        case .namespace: return "every workload of the namespace"
        case .workloads(let workloads, _):
            return workloads.isEmpty ? "the selected pods" : workloads.map { "\($0.kind) \($0.name)" }.joined(separator: ", ")
        }
    }

    /// A selector that matches no pod, or pods no Service selects.
    static func selectionWarnings(_ manifest: Manifest, targets: Targets, cluster: Cluster) -> [Diagnostic] {
        if case .namespace(let services) = targets, services.isEmpty {
            return [Diagnostic(.warning, resource: manifest.id, location: manifest.location,
                               "selects no Service: it applies to all of namespace \(manifest.namespace), which has no Service in the input (headless, gateway and waypoint Services do not count)")]
        }
        guard case .workloads(let workloads, let services) = targets else { return [] }
        let selector = Self.describe(manifest.spec["selector"]?["matchLabels"]?.stringMap ?? [:])
        if workloads.isEmpty {
            return [Diagnostic(.warning, resource: manifest.id, location: manifest.location,
                               "selects no Service: its selector \(selector) matches no Deployment or Pod in namespace \(manifest.namespace) of the input, so no Service can be resolved for it")]
        }
        var diagnostics: [Diagnostic] = []
        let selected = Set(workloads.map { "\($0.kind)/\($0.name)" })
        for service in services {
            let others = cluster.workloads(selectedBy: service).filter { !selected.contains("\($0.kind)/\($0.name)") }
            guard !others.isEmpty else { continue }
            diagnostics.append(Diagnostic(
                .warning, resource: manifest.id, location: manifest.location,
                "Service \(service.name) also selects \(others.map { "\($0.kind) \($0.name)" }.joined(separator: ", ")), which this policy's selector does not: a twin targeting the Service applies to all of its pods at the waypoint (wider than today); narrow it with a version Service or review the rules"
            ))
        }
        if services.isEmpty {
            return diagnostics + [Diagnostic(.warning, resource: manifest.id, location: manifest.location,
                               "selects no Service: its selector \(selector) matches \(workloads.map { "\($0.kind) \($0.name)" }.joined(separator: ", ")), but no Service in namespace \(manifest.namespace) selects those pods (headless Services do not count: their traffic goes to pod IPs); a waypoint only sees traffic addressed to a Service (or to pods labelled istio.io/use-waypoint)")]
        }
        return diagnostics
    }
}
