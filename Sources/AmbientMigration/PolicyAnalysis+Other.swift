extension PolicyAnalysis {
    // MARK: PeerAuthentication

    /// ztunnel enforces PeerAuthentication: istiod turns STRICT into a DENY of connections
    /// without a mesh identity; PERMISSIVE and DISABLE both mean no such DENY; port-level
    /// modes only on workload-selector policies outside the root namespace.
    static func peerAuthentication(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        let mode = manifest.spec["mtls"]?["mode"]?.scalarText ?? "UNSET"
        var reasons: [String]
        switch mode {
        case "STRICT": reasons = ["mtls.mode STRICT: ztunnel refuses connections without a mesh identity"]
        case "PERMISSIVE": reasons = ["mtls.mode PERMISSIVE: ztunnel also accepts plaintext"]
        case "DISABLE": reasons = ["mtls.mode DISABLE: ztunnel treats it like PERMISSIVE (HBONE between ztunnels stays mTLS)"]
        default: reasons = ["mtls.mode \(mode): inherited from the namespace or mesh policy"]
        }
        var analysis = Analysis(finding: Finding(
            resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location, placement: .nodeProxy, reasons: reasons
        ))
        if let ports = manifest.spec["portLevelMtls"]?.entries, !ports.isEmpty {
            let selector = manifest.spec["selector"]?["matchLabels"]?.stringMap ?? [:]
            if selector.isEmpty || manifest.namespace == cluster.rootNamespace {
                analysis.diagnostics.append(Diagnostic(
                    .warning, resource: manifest.id, location: manifest.location,
                    "portLevelMtls on a namespace- or mesh-wide PeerAuthentication is ignored by ztunnel (only workload-selector policies outside the root namespace honour it)"
                ))
            } else {
                analysis.finding.reasons.append("portLevelMtls ports \(ports.map(\.key).joined(separator: ", ")): honoured by ztunnel")
            }
        }
        return analysis
    }

    // MARK: RequestAuthentication

    static func requestAuthentication(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        if let placed = Self.placedElsewhere(manifest, cluster: cluster) { return placed }
        let issuers = (manifest.spec["jwtRules"]?.items ?? []).compactMap { $0["issuer"]?.scalarText }
        let targets = Self.targets(of: manifest, in: cluster)
        var analysis = Analysis(finding: Finding(
            resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location, placement: .waypoint,
            reasons: ["jwtRules (issuer \(issuers.isEmpty ? "?" : issuers.joined(separator: ", "))): JWT validation reads HTTP headers, which only Envoy parses"],
            services: targets.services.map(\.key), waypointNamespace: manifest.namespace
        ))
        analysis.diagnostics += Self.selectionWarnings(manifest, targets: targets, cluster: cluster)
        analysis.diagnostics.append(Diagnostic(
            .warning, resource: manifest.id, location: manifest.location,
            "left selector-based, no JWT is validated once the sidecars are gone (ztunnel ignores RequestAuthentication); policies using requestPrincipals need \(manifest.name)-waypoint at the waypoint"
        ))
        analysis.twin = targets
        return analysis
    }

    // MARK: Telemetry

    /// Tracing, request metrics and HTTP access logs come from Envoy; ztunnel emits its own
    /// TCP metrics and access logs and does not read Telemetry.
    static func telemetry(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        if let placed = Self.placedElsewhere(manifest, cluster: cluster) { return placed }
        let sections = ["tracing", "metrics", "accessLogging"].filter { manifest.spec[$0].map { !$0.isEmpty } ?? false }
        let finding = Finding(resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location, placement: .unaffected, reasons: [])
        var analysis = Analysis(finding: finding)
        if sections.isEmpty {
            analysis.finding.reasons = ["no tracing, metrics or accessLogging: nothing to apply"]
            return analysis
        }
        let targets = Self.targets(of: manifest, in: cluster)
        if case .meshWide = targets {
            analysis.finding.reasons = ["mesh-wide \(sections.joined(separator: ", ")): applies to waypoints and gateways as they are; ztunnel does not read Telemetry"]
            return analysis
        }
        analysis.finding.placement = .waypoint
        analysis.finding.reasons = sections.map { "\($0): HTTP telemetry comes from Envoy; ztunnel emits TCP metrics and access logs only" }
        analysis.finding.services = targets.services.map(\.key)
        analysis.finding.waypointNamespace = manifest.namespace
        analysis.diagnostics += Self.selectionWarnings(manifest, targets: targets, cluster: cluster)
        analysis.twin = targets
        return analysis
    }
}
