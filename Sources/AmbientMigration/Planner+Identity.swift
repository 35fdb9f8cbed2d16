/// What changes for L4 policy once traffic goes through a waypoint: ztunnel at the
/// destination sees the waypoint's identity, not the client's.
extension Planner {
    /// Adds a generated manifest, unless an object of that kind and name is already in the
    /// input (`kubectl apply` would overwrite it): then it is left for manual work. Returns
    /// whether it was generated (or already was).
    @discardableResult
    mutating func emit(_ value: YAMLValue, purpose: String, source: ResourceID?) -> Bool {
        let manifest = MigrationPlan.GeneratedManifest(value, purpose: purpose, source: source)
        if self.cluster.contains(manifest.resource) {
            self.output.manual.append(.init(resource: source ?? manifest.resource, reasons: [
                "\(manifest.resource) would be generated (\(purpose)), but one of that name exists in the input: not overwritten; rename and apply by hand",
            ]))
            return false
        }
        if !self.output.generated.contains(where: { $0.resource == manifest.resource }) { self.output.generated.append(manifest) }
        return true
    }

    func waypoint(behind namespace: String) -> MigrationPlan.Waypoint? {
        self.output.waypoints.first { $0.namespace == namespace && !$0.services.isEmpty }
    }

    func principal(of waypoint: MigrationPlan.Waypoint) -> String {
        "\(self.configuration.trustDomain)/ns/\(waypoint.namespace)/sa/\(waypoint.name)"
    }

    /// `<name>-via-waypoint`: an L4 ALLOW on the same pods for the waypoint's identity
    /// (plus, for a policy moving to the waypoint, its L4-only rules, which ztunnel keeps
    /// enforcing for clients that do not come through the waypoint). Applied before the
    /// restarts it keeps the pods reachable through the waypoint while the original (which
    /// ztunnel reduces to "allow nothing") is still in place; afterwards it stops clients
    /// from bypassing the waypoint by connecting to pod IPs.
    ///
    /// None for a mesh-wide policy: a mesh-wide ALLOW for waypoints only would cut off every
    /// workload that has no waypoint; that case is left for manual work instead.
    mutating func addCompanion(for manifest: Manifest, targets: Targets, keepingL4Rules: Bool) {
        if case .meshWide = targets {
            let covered = Set(self.output.waypoints.map(\.namespace))
            let uncovered = Set(self.cluster.workloadsNamespaces).filter {
                !covered.contains($0) && !MigrationAnalyzer.systemNamespaces.contains($0) && $0 != self.configuration.rootNamespace
            }.sorted()
            self.output.manual.append(.init(resource: manifest.id, reasons: [
                "mesh-wide ALLOW with HTTP rules: they hold only where traffic passes a waypoint"
                    + (uncovered.isEmpty ? "" : "; namespaces without one: \(uncovered.joined(separator: ", "))")
                    + ". Deploy waypoints there (and an L4 ALLOW for the waypoints' identities), or narrow the policy to the namespaces that need it",
            ]))
            return
        }
        guard let waypoint = self.waypoint(behind: manifest.namespace) else { return }
        let name = waypoint.name
        let principal = self.principal(of: waypoint)
        var rules: [YAMLValue] = [.object(["from": .sequence([.object(["source": .object(["principals": .sequence([.string(principal)])])])])])]
        if keepingL4Rules {
            rules += (manifest.spec["rules"]?.items ?? []).enumerated().filter { PolicyAnalysis.scan(rule: $0.element, index: $0.offset).l7.isEmpty }.map(\.element)
        }
        let companion = YAMLValue.object([
            "apiVersion": .string(manifest.apiVersion),
            "kind": .string("AuthorizationPolicy"),
            "metadata": .object(["name": .string("\(manifest.name)-via-waypoint"), "namespace": .string(manifest.namespace)]),
            "spec": .object(["selector": manifest.spec["selector"], "action": .string("ALLOW"), "rules": .sequence(rules)]),
        ])
        self.emit(companion, purpose: "L4: lets waypoint \(name) reach the pods of \(manifest.name) (enforced by ztunnel)", source: manifest.id)
    }

    /// An L4 policy that checks sources (`from`, or `when` on `source.*`) on pods whose
    /// Services move behind a waypoint sees the waypoint's identity for that traffic. Its
    /// checks move with the traffic: a `targetRefs` twin at the waypoint sees the real
    /// client. An ALLOW that does not already admit the waypoint gets a via-waypoint
    /// companion; a DENY whose not-lists do not exempt the waypoint is warned about.
    mutating func protectSourceChecks() {
        for (manifest, analysis) in self.analyses where manifest.kind == "AuthorizationPolicy" && analysis.finding.placement == .nodeProxy {
            let rules = manifest.spec["rules"]?.items ?? []
            let sources = rules.flatMap { $0["from"]?.items ?? [] }.compactMap { $0["source"] }
            let sourceConditions = rules.flatMap { $0["when"]?.items ?? [] }.contains { ($0["key"]?.scalarText ?? "").hasPrefix("source.") }
            guard !sources.isEmpty || sourceConditions, let waypoint = self.waypoint(behind: manifest.namespace) else { continue }
            let targets = PolicyAnalysis.targets(of: manifest, in: self.cluster)
            let behind = targets.services.filter { waypoint.scope == .namespace || waypoint.services.contains($0.name) }
            guard !behind.isEmpty else { continue }
            let principal = self.principal(of: waypoint)
            self.emitTwins(of: manifest, services: behind, purpose: "keeps the source checks of \(manifest.name) at the waypoint, which sees the real client")
            var made = ["\(manifest.name)-waypoint (the same checks at the waypoint)"]
            if (manifest.spec["action"]?.scalarText ?? "ALLOW") == "ALLOW" {
                let admits = sources.contains { source in
                    (source["principals"]?.textList ?? []).contains(principal) || (source["namespaces"]?.textList ?? []).contains(waypoint.namespace)
                }
                if !admits {
                    self.addCompanion(for: manifest, targets: targets, keepingL4Rules: false)
                    made.append("\(manifest.name)-via-waypoint (ztunnel admits the waypoint)")
                }
            } else if manifest.spec["action"]?.scalarText == "DENY" {
                let exempting = sources.filter { source in ["notNamespaces", "notPrincipals", "notServiceAccounts"].contains { source[$0] != nil } }
                let allExempt = exempting.allSatisfy { source in
                    (source["notNamespaces"]?.textList ?? []).contains(waypoint.namespace) || (source["notPrincipals"]?.textList ?? []).contains(principal)
                        || (source["notServiceAccounts"]?.textList ?? []).contains { $0 == waypoint.name || $0 == "\(waypoint.namespace)/\(waypoint.name)" }
                }
                if !exempting.isEmpty, !allExempt {
                    self.diagnostics.append(Diagnostic(
                        .warning, resource: manifest.id, location: manifest.location,
                        "L4 DENY with not-lists on pods behind waypoint \(waypoint.name): ztunnel sees the waypoint's identity (\(principal)), which the lists do not exempt, so traffic through the waypoint would be denied; add it to notPrincipals (\(manifest.name)-waypoint checks the real client at the waypoint)"
                    ))
                }
            }
            self.diagnostics.append(Diagnostic(
                .warning, resource: manifest.id, location: manifest.location,
                "its source checks on \(behind.map(\.name).joined(separator: ", ")) would see waypoint \(waypoint.name)'s identity for traffic through it, so any client of the waypoint would pass them; generated \(made.joined(separator: " and "))"
            ))
        }
    }

    private mutating func emitTwins(of manifest: Manifest, services: [Cluster.Service], purpose: String) {
        for twin in Generate.twins(of: manifest, targets: .namespace(services)) {
            self.emit(twin, purpose: purpose, source: manifest.id)
        }
    }

    /// Ingress gateways send to a Service's pods directly, past its waypoint, unless the
    /// Service is labelled `istio.io/ingress-use-waypoint=true`: without it L7 policies are
    /// skipped for ingress traffic and the via-waypoint companions refuse it.
    mutating func findIngressBackends() {
        let backends = Set(self.analyses.filter { $0.1.finding.placement == .ingressGateway }.flatMap { manifest, _ in
            self.cluster.routeBackends(manifest)
        })
        for index in self.output.waypoints.indices {
            let waypoint = self.output.waypoints[index]
            let candidates = waypoint.scope == .namespace ? self.cluster.services(in: waypoint.namespace).map(\.name) : waypoint.services
            self.output.waypoints[index].ingressServices = candidates.filter { backends.contains("\(waypoint.namespace)/\($0)") }.sorted()
        }
    }

    /// A pod template that asks for a sidecar itself keeps it after the namespace moves.
    mutating func warnAboutPodLabels() {
        let moving = Set(self.output.namespaces.map(\.namespace))
        for workload in self.cluster.workloadsRequestingSidecars where moving.contains(workload.namespace) {
            self.diagnostics.append(Diagnostic(
                .warning, resource: ResourceID(kind: workload.kind, namespace: workload.namespace, name: workload.name), location: nil,
                "its pod template asks for a sidecar (sidecar.istio.io/inject=true or istio.io/rev): remove that, or its pods come back with a sidecar and stay out of ambient"
            ))
        }
    }
}
