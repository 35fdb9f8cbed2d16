/// Classifies the `networking.istio.io` and Gateway API kinds.
enum RouteAnalysis {
    static func finding(_ manifest: Manifest, _ placement: Placement, _ reasons: [String]) -> Finding {
        Finding(resource: manifest.id, apiVersion: manifest.apiVersion, location: manifest.location, placement: placement, reasons: reasons)
    }

    // MARK: VirtualService

    /// HTTP route features a VirtualService may use, in the order they are reported.
    static let httpFeatures = ["match", "route", "redirect", "rewrite", "timeout", "retries", "fault", "mirror", "mirrors", "corsPolicy", "headers", "delegate", "directResponse"]

    /// Bound to `mesh` (the default when `gateways` is empty): routing that sidecars applied
    /// and a waypoint must now apply. Bound only to gateways: stays at the gateway.
    static func virtualService(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        let spec = manifest.spec
        var gateways = spec["gateways"]?.textList ?? []
        if gateways.isEmpty { gateways = ["mesh"] }
        let hosts = spec["hosts"]?.textList ?? []
        guard gateways.contains("mesh") else {
            return Analysis(finding: Self.finding(manifest, .ingressGateway, ["bound to gateway \(gateways.joined(separator: ", ")) only: routing stays at the gateway"]))
        }
        var reasons: [String] = []
        for (index, route) in (spec["http"]?.items ?? []).enumerated() {
            let used = Self.httpFeatures.filter { route[$0] != nil }
            var text = "http[\(index)]: \(used.joined(separator: ", "))"
            let destinations = (route["route"]?.items ?? []).compactMap { destination -> String? in
                guard let host = destination["destination"]?["host"]?.scalarText else { return nil }
                let subset = destination["destination"]?["subset"]?.scalarText.map { " subset \($0)" } ?? ""
                let weight = destination["weight"]?.int.map { " weight \($0)" } ?? ""
                return "\(host)\(subset)\(weight)"
            }
            if !destinations.isEmpty { text += " → \(destinations.joined(separator: "; "))" }
            reasons.append(text)
        }
        if let tcp = spec["tcp"]?.items, !tcp.isEmpty { reasons.append("tcp: \(tcp.count) route(s): ztunnel does not route, a waypoint does") }
        if let tls = spec["tls"]?.items, !tls.isEmpty { reasons.append("tls: \(tls.count) SNI route(s): applied by a waypoint") }
        if reasons.isEmpty { reasons = ["mesh routing for \(hosts.joined(separator: ", ")): applied by a waypoint"] }

        var analysis = Analysis(finding: Self.finding(manifest, .waypoint, reasons))
        var services: [Cluster.Service] = []
        for host in hosts {
            if let service = cluster.service(host: host, from: manifest.namespace), service.headless {
                analysis.diagnostics.append(Diagnostic(
                    .warning, resource: manifest.id, location: manifest.location,
                    "host \(host) is a headless Service: its clients connect to pod IPs, which never reach a waypoint, so this routing would stop applying"
                ))
            } else if let service = cluster.service(host: host, from: manifest.namespace) {
                services.append(service)
            } else {
                analysis.diagnostics.append(Diagnostic(
                    .note, resource: manifest.id, location: manifest.location,
                    "host \(host) is not a Service in the input: if it is a ServiceEntry, its egress waypoint applies this route"
                ))
            }
        }
        analysis.finding.services = services.map(\.key)
        analysis.finding.waypointNamespace = services.first?.namespace ?? manifest.namespace
        let others = gateways.filter { $0 != "mesh" }
        if !others.isEmpty {
            analysis.diagnostics.append(Diagnostic(
                .note, resource: manifest.id, location: manifest.location,
                "also bound to gateway \(others.joined(separator: ", ")): that part stays at the gateway"
            ))
        }
        return analysis
    }

    // MARK: DestinationRule

    /// Traffic policy is Envoy's (connection pools, outlier detection, load balancing, TLS
    /// origination); subsets alone only name pods for routes.
    static func destinationRule(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        let spec = manifest.spec
        let host = spec["host"]?.scalarText ?? "?"
        var policies: [(String, YAMLValue)] = []
        if let policy = spec["trafficPolicy"] { policies.append(("trafficPolicy", policy)) }
        for (index, port) in (spec["trafficPolicy"]?["portLevelSettings"]?.items ?? []).enumerated() {
            policies.append(("trafficPolicy.portLevelSettings[\(index)]", port))
        }
        for subset in spec["subsets"]?.items ?? [] {
            if let policy = subset["trafficPolicy"] { policies.append(("subsets[\(subset["name"]?.scalarText ?? "?")].trafficPolicy", policy)) }
        }
        var l7: [String] = []
        var notes: [String] = []
        for (path, policy) in policies {
            for key in ["connectionPool", "outlierDetection", "loadBalancer", "proxyProtocol", "tunnel"] where policy[key] != nil {
                l7.append("\(path).\(key)")
            }
            if let mode = policy["tls"]?["mode"]?.scalarText {
                if mode == "SIMPLE" || mode == "MUTUAL" {
                    l7.append("\(path).tls.mode \(mode): TLS origination")
                } else {
                    notes.append("\(path).tls.mode \(mode): not needed, ztunnels always use mTLS (HBONE)")
                }
            }
        }
        let service = cluster.service(host: host, from: manifest.namespace)
        if l7.isEmpty {
            let subsets = (spec["subsets"]?.items ?? []).compactMap { $0["name"]?.scalarText }
            var reasons = notes
            if !subsets.isEmpty { reasons.append("subsets \(subsets.joined(separator: ", ")) only: names pods for routes, enforces nothing") }
            if reasons.isEmpty { reasons = ["no traffic policy"] }
            return Analysis(finding: Self.finding(manifest, .unaffected, reasons))
        }
        var finding = Self.finding(manifest, .waypoint, l7.map { "\($0) for \(host)" } + notes)
        finding.services = service.map { [$0.key] } ?? []
        finding.waypointNamespace = service?.namespace ?? manifest.namespace
        return Analysis(finding: finding)
    }

    // MARK: ServiceEntry, Sidecar, gateways

    static func serviceEntry(_ manifest: Manifest) -> Analysis {
        let location = manifest.spec["location"]?.scalarText ?? "MESH_EXTERNAL"
        let hosts = manifest.spec["hosts"]?.textList ?? []
        if location == "MESH_INTERNAL" {
            return Analysis(finding: Self.finding(manifest, .nodeProxy, ["MESH_INTERNAL \(hosts.joined(separator: ", ")): ztunnel routes to its endpoints"]))
        }
        var finding = Self.finding(manifest, .waypoint, [
            "MESH_EXTERNAL \(hosts.joined(separator: ", ")): egress policy, TLS origination and telemetry need an egress waypoint (istio.io/use-waypoint on the ServiceEntry); without one ztunnel passes the traffic through unchecked",
        ])
        finding.waypointNamespace = manifest.namespace
        return Analysis(finding: finding)
    }

    static func sidecar(_ manifest: Manifest) -> Analysis {
        var analysis = Analysis(finding: Self.finding(manifest, .notUsed, [
            "ambient has no sidecars: ztunnel and waypoints ignore Sidecar resources; delete it after the migration",
        ]))
        if manifest.spec["outboundTrafficPolicy"]?["mode"]?.scalarText == "REGISTRY_ONLY" {
            analysis.diagnostics.append(Diagnostic(
                .warning, resource: manifest.id, location: manifest.location,
                "outboundTrafficPolicy REGISTRY_ONLY is lost with the sidecars: restrict egress with an egress waypoint and AuthorizationPolicy instead"
            ))
        }
        return analysis
    }

    static func gateway(_ manifest: Manifest) -> Analysis {
        if manifest.group == "networking.istio.io" {
            return Analysis(finding: Self.finding(manifest, .ingressGateway, ["Istio Gateway: served by gateway pods, which keep their Envoy"]))
        }
        let className = manifest.spec["gatewayClassName"]?.scalarText ?? "?"
        if className == "istio-waypoint" {
            return Analysis(finding: Self.finding(manifest, .unaffected, ["gateway class istio-waypoint: an existing waypoint"]))
        }
        return Analysis(finding: Self.finding(manifest, .ingressGateway, ["gateway class \(className): an ingress gateway with its own Envoy, no waypoint needed"]))
    }

    // MARK: Gateway API routes

    /// A route with a Service parent is a mesh (GAMMA) route, applied by that Service's
    /// waypoint; one attached only to an ingress Gateway stays there.
    static func gatewayAPIRoute(_ manifest: Manifest, cluster: Cluster) -> Analysis {
        var meshParents: [Cluster.Service] = []
        var missing: [String] = []
        var gateways: [String] = []
        var groupless: [String] = []
        for parent in manifest.spec["parentRefs"]?.items ?? [] {
            let kind = parent["kind"]?.scalarText ?? "Gateway"
            if kind == "Service", parent["group"] == nil { groupless.append(parent["name"]?.scalarText ?? "?") }
            let group = parent["group"]?.scalarText ?? (kind == "Service" ? "" : "gateway.networking.k8s.io")
            let name = parent["name"]?.scalarText ?? "?"
            let namespace = parent["namespace"]?.scalarText ?? manifest.namespace
            if kind == "Service", group.isEmpty || group == "core" {
                if let service = cluster.service(host: "\(name).\(namespace)", from: namespace) {
                    meshParents.append(service)
                } else {
                    missing.append("\(namespace)/\(name)")
                }
            } else if kind == "Gateway" {
                let isWaypoint = cluster.gateways["\(namespace)/\(name)"]?.isWaypoint ?? false
                gateways.append(isWaypoint ? "waypoint \(namespace)/\(name)" : "\(namespace)/\(name)")
            }
        }
        if meshParents.isEmpty, missing.isEmpty {
            let placement: Placement = gateways.contains { $0.hasPrefix("waypoint ") } ? .unaffected : .ingressGateway
            return Analysis(finding: Self.finding(manifest, placement, [
                gateways.isEmpty ? "no parentRefs: attached to nothing" : "attached to Gateway \(gateways.joined(separator: ", ")): applied there, no waypoint needed",
            ]))
        }
        let names = (meshParents.map(\.key) + missing).joined(separator: ", ")
        var analysis = Analysis(finding: Self.finding(manifest, .waypoint, [
            "parentRefs Service \(names): a mesh (GAMMA) \(manifest.kind), applied by the Service's waypoint",
        ]))
        analysis.finding.services = meshParents.map(\.key)
        analysis.finding.waypointNamespace = meshParents.first?.namespace ?? manifest.namespace
        for name in groupless {
            analysis.diagnostics.append(Diagnostic(
                .warning, resource: manifest.id, location: manifest.location,
                "parentRef Service \(name) has no group: Gateway API defaults it to gateway.networking.k8s.io, so it does not name the core Service; set group: \"\""
            ))
        }
        for key in missing {
            analysis.diagnostics.append(Diagnostic(.warning, resource: manifest.id, location: manifest.location, "parent Service \(key) is not in the input"))
        }
        return analysis
    }
}
