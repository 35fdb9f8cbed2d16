/// Turns the per-resource analysis into a plan: waypoints and their granularity, twins
/// and route translations, namespace labels, and the ordered commands.
struct Planner {
    let configuration: MigrationAnalyzer.Configuration
    let cluster: Cluster
    let analyses: [(Manifest, Analysis)]
    var diagnostics: [Diagnostic] = []
    var output = MigrationPlan()
    /// Resources to delete once their replacement is applied.
    var superseded: [ResourceID] = []

    init(configuration: MigrationAnalyzer.Configuration, cluster: Cluster, analyses: [(Manifest, Analysis)]) {
        self.configuration = configuration
        self.cluster = cluster
        self.analyses = analyses
    }

    mutating func plan() -> MigrationPlan {
        self.planWaypoints()
        self.generateReplacements()
        self.planNamespaces()
        self.protectSourceChecks()
        self.findIngressBackends()
        self.warnAboutPodLabels()
        self.writeSteps()
        return self.output
    }

    // MARK: Waypoints

    /// Namespace granularity by default; per-service where fewer than half of the
    /// namespace's Services need L7 processing (policies differ across its services, and a
    /// namespace waypoint would put every service's traffic through Envoy). Anything that
    /// applies namespace-wide (a selector-less policy) needs the namespace waypoint; an
    /// egress ServiceEntry needs a waypoint to exist, and is labelled to use it itself.
    private mutating func planWaypoints() {
        var needs: [String: (services: Set<String>, namespaceWide: Bool, egress: Bool, resources: Set<String>)] = [:]
        for (manifest, analysis) in self.analyses where analysis.finding.placement == .waypoint {
            var byNamespace: [String: [String]] = [:]
            for key in analysis.finding.services {
                let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
                if parts.count == 2 { byNamespace[parts[0], default: []].append(parts[1]) }
            }
            if byNamespace.isEmpty, let namespace = analysis.finding.waypointNamespace { byNamespace[namespace] = [] }
            var namespaceWide = false
            if case .namespace = analysis.twin { namespaceWide = true }
            for (namespace, names) in byNamespace {
                var entry = needs[namespace] ?? ([], false, false, [])
                entry.services.formUnion(names)
                entry.namespaceWide = entry.namespaceWide || namespaceWide
                entry.egress = entry.egress || manifest.kind == "ServiceEntry"
                entry.resources.insert(manifest.id.description)
                needs[namespace] = entry
            }
        }
        for (namespace, need) in needs.sorted(by: { $0.key < $1.key }) {
            // Nothing to put behind a waypoint: a mesh-wide policy (it targets every waypoint
            // through the GatewayClass) or one that resolved to no Service (warned).
            // An egress-only namespace still needs a waypoint for its ServiceEntries.
            if need.services.isEmpty, !need.egress { continue }
            let waypoints = self.cluster.gateways.values.filter { $0.namespace == namespace && $0.isWaypoint }.sorted { $0.name < $1.name }
            let existing = waypoints.first { $0.servesServices }
            for other in waypoints where !other.servesServices {
                self.diagnostics.append(Diagnostic(
                    .note, resource: ResourceID(kind: "Gateway", namespace: namespace, name: other.name), location: nil,
                    "waypoint \(other.name) is istio.io/waypoint-for=\(other.waypointFor ?? "?"): it does not serve Service traffic, so it is not used for this plan"
                ))
            }
            let total = self.cluster.services(in: namespace).count
            let scope: MigrationPlan.Waypoint.Scope = need.namespaceWide || (!need.services.isEmpty && need.services.count * 2 >= total) ? .namespace : .service
            let reason = scope == .namespace
                ? "\(need.services.count) of \(total) Services need L7 processing\(need.namespaceWide ? ", and a namespace-wide resource applies" : "")"
                : need.services.isEmpty ? "egress: only the ServiceEntries labelled to use it go through it"
                : "only \(need.services.count) of \(total) Services need L7 processing: the others stay at L4, without the extra hop"
            self.output.waypoints.append(MigrationPlan.Waypoint(
                namespace: namespace, name: existing?.name ?? self.configuration.waypointName, scope: scope,
                services: need.services.sorted(), reason: "\(reason) (\(need.resources.sorted().joined(separator: ", ")))",
                existing: existing != nil
            ))
            if existing == nil {
                self.emit(
                    Generate.waypoint(self.configuration.waypointName, namespace: namespace),
                    purpose: "waypoint for \(scope == .namespace ? "namespace \(namespace)" : need.services.isEmpty ? "egress" : need.services.sorted().joined(separator: ", "))", source: nil
                )
            }
        }
    }

    // MARK: Twins and routes

    private mutating func generateReplacements() {
        for (manifest, analysis) in self.analyses where analysis.finding.placement == .waypoint {
            if let targets = analysis.twin {
                let twins = Generate.twins(of: manifest, targets: targets)
                guard !twins.isEmpty else {
                    self.output.manual.append(.init(resource: manifest.id, reasons: ["no Service to target: see the warning; add targetRefs by hand"]))
                    continue
                }
                var complete = true
                for twin in twins {
                    complete = self.emit(twin, purpose: "replaces the selector-based \(manifest.kind) \(manifest.name), enforced by the waypoint", source: manifest.id) && complete
                }
                if manifest.kind == "AuthorizationPolicy", (manifest.spec["action"]?.scalarText ?? "ALLOW") == "ALLOW" {
                    self.addCompanion(for: manifest, targets: targets, keepingL4Rules: true)
                }
                self.warnAboutGatewaysInScope(manifest, targets: targets)
                // The original goes only once its replacement exists.
                if complete { self.superseded.append(manifest.id) }
            } else if manifest.kind == "VirtualService" {
                let result = HTTPRouteTranslation.translate(manifest, cluster: self.cluster)
                for note in result.notes {
                    self.diagnostics.append(Diagnostic(.note, resource: manifest.id, location: manifest.location, note))
                }
                let gateways = (manifest.spec["gateways"]?.textList ?? []).filter { $0 != "mesh" }
                if result.manual.isEmpty {
                    var complete = true
                    for (index, value) in result.manifests.enumerated() {
                        complete = self.emit(
                            value, purpose: index == 0 ? "HTTPRoute translation of VirtualService \(manifest.name)" : "version Service for the HTTPRoute (Gateway API has no subsets)",
                            source: manifest.id
                        ) && complete
                    }
                    if !complete {
                        // Kept: what would replace it is not generated (see manual work).
                    } else if gateways.isEmpty {
                        self.superseded.append(manifest.id)
                    } else {
                        self.output.manual.append(.init(resource: manifest.id, reasons: [
                            "also bound to gateway \(gateways.joined(separator: ", ")): keep it for the gateway and remove mesh from spec.gateways once the HTTPRoute is applied",
                        ]))
                    }
                } else {
                    self.output.manual.append(.init(resource: manifest.id, reasons: result.manual + [
                        "manual: keep the VirtualService (waypoints apply VirtualServices bound to mesh) or write the HTTPRoute by hand",
                    ]))
                }
            } else if ["DestinationRule", "ServiceEntry"].contains(manifest.kind) {
                self.output.manual.append(.init(resource: manifest.id, reasons: [
                    manifest.kind == "ServiceEntry"
                        ? "label it istio.io/use-waypoint=\(self.waypointName(in: manifest.namespace)) so egress goes through the waypoint"
                        : "keep it: the waypoint applies DestinationRule traffic policy for the Services it serves",
                ]))
            }
        }
        for (manifest, analysis) in self.analyses where analysis.finding.placement == .notUsed {
            self.superseded.append(manifest.id)
        }
    }

    /// A selector-less policy also applies to gateway pods, which keep their Envoy:
    /// deleting it takes it away from them too.
    private mutating func warnAboutGatewaysInScope(_ manifest: Manifest, targets: Targets) {
        let gateways: [String]
        switch targets {
        case .workloads: return
        case .namespace: gateways = self.cluster.gatewayPods(in: manifest.namespace)
        case .meshWide: gateways = self.cluster.gatewayPods(in: nil)
        }
        guard !gateways.isEmpty else { return }
        self.diagnostics.append(Diagnostic(
            .warning, resource: manifest.id, location: manifest.location,
            "it also applies to the gateway pods of \(gateways.joined(separator: ", ")), which keep their Envoy: deleting it after the migration removes it there too; keep a copy with a selector for the gateway pods"
        ))
    }

    private func waypointName(in namespace: String) -> String {
        self.output.waypoints.first { $0.namespace == namespace }?.name ?? self.configuration.waypointName
    }

    // MARK: Namespaces

    private mutating func planNamespaces() {
        let withWorkloads = Set(self.cluster.workloadsNamespaces)
        for name in self.cluster.namespaceNames where withWorkloads.contains(name) && !MigrationAnalyzer.systemNamespaces.contains(name) && name != self.configuration.rootNamespace {
            let namespace = self.cluster.namespace(name)
            let labels = namespace?.labels ?? [:]
            var remove = ["istio-injection", "istio.io/rev"].filter { labels[$0] != nil }
            if namespace?.declared != true {
                remove = ["istio-injection", "istio.io/rev"]
                self.diagnostics.append(Diagnostic(
                    .warning, resource: ResourceID(kind: "Namespace", namespace: "", name: name), location: nil,
                    "missing namespace: workloads use namespace \(name) but no Namespace object is in the input, so its istio-injection and istio.io/rev labels could not be checked; the plan removes both"
                ))
            }
            self.output.namespaces.append(.init(namespace: name, add: ["istio.io/dataplane-mode": "ambient"], remove: remove))
        }
    }
}
