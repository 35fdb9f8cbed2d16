import AmbientMigration
import Testing

@Suite("migration analyzer routes and traffic policy")
struct RouteTests {
    static func analyze(_ text: String) -> MigrationReport {
        MigrationAnalyzer().analyze(ManifestLoader.parse(PolicyTests.workloads + "---\n" + text, file: "test.yaml"))
    }

    @Test("a VirtualService bound to an ingress gateway only stays there; bound to mesh needs a waypoint")
    func virtualServiceBinding() {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: edge, namespace: shop}
            spec: {hosts: [shop.example.com], gateways: [istio-system/public], http: [{route: [{destination: {host: web}}]}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: both, namespace: shop}
            spec: {hosts: [web], gateways: [mesh, istio-system/public], http: [{route: [{destination: {host: web}}]}]}
            """)
        #expect(report.finding("VirtualService", "shop", "edge")?.placement == .ingressGateway)
        #expect(report.finding("VirtualService", "shop", "both")?.placement == .waypoint)
        #expect(report.diagnostics.contains { $0.message == "also bound to gateway istio-system/public: that part stays at the gateway" })
    }

    @Test("translation: matches, weights, header changes, rewrite, timeout")
    func translation() throws {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: api, namespace: shop}
            spec:
              hosts: [api.shop.svc.cluster.local]
              http:
              - match: [{uri: {prefix: /v2}, headers: {x-canary: {exact: "1"}}, method: {exact: GET}}]
                rewrite: {uri: /}
                headers: {request: {set: {x-route: canary}, remove: [x-debug]}}
                timeout: 1.5s
                route: [{destination: {host: api, port: {number: 80}}, weight: 90}, {destination: {host: web}, weight: 10}]
              - route: [{destination: {host: api, port: {number: 9000}}}]
            """)
        let route = try #require(report.plan.generated("HTTPRoute", "shop", "api"))
        let parsed = try #require(ManifestLoader.parse(route.yaml, file: "r").manifests.first)
        let rules = try #require(parsed.spec["rules"]?.items)
        #expect(rules.count == 2)
        #expect(rules[0]["matches"] == .sequence([.object([
            "path": .object(["type": .string("PathPrefix"), "value": .string("/v2")]),
            "headers": .sequence([.object(["name": .string("x-canary"), "type": .string("Exact"), "value": .string("1")])]),
            "method": .string("GET"),
        ])]))
        #expect(rules[0]["filters"]?.items?.compactMap { $0["type"]?.string } == ["RequestHeaderModifier", "URLRewrite"])
        #expect(rules[0]["filters"]?.items?[1]["urlRewrite"]?["path"] == .object(["type": .string("ReplacePrefixMatch"), "replacePrefixMatch": .string("/")]))
        #expect(rules[0]["timeouts"] == .object(["request": .string("1500ms")]))
        #expect(rules[0]["backendRefs"]?.items?.map { "\($0["name"]?.string ?? "")/\($0["port"]?.int ?? 0)/\($0["weight"]?.int ?? -1)" } == ["api/80/90", "web/80/10"])
        #expect(rules[1]["backendRefs"] == .sequence([.object(["name": .string("api"), "port": .int(9000)])]))
        #expect(report.plan.manual.isEmpty)
    }

    @Test("translation keeps Istio's first-match order or refuses; rewrite without match; redirect codes; other namespaces")
    func translationLimits() throws {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: order, namespace: shop}
            spec:
              hosts: [web]
              http:
              - match: [{headers: {x-canary: {exact: "1"}}}]
                route: [{destination: {host: web}}]
              - match: [{uri: {prefix: /api}}]
                route: [{destination: {host: web}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: rewrite, namespace: shop}
            spec:
              hosts: [web]
              http:
              - rewrite: {uri: /v2}
                route: [{destination: {host: web}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: moved, namespace: shop}
            spec:
              hosts: [web]
              http: [{redirect: {uri: /new, redirectCode: 307}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: consumer, namespace: other}
            spec:
              hosts: [web.shop.svc.cluster.local]
              http: [{route: [{destination: {host: web.shop.svc.cluster.local}}]}]
            """)
        #expect(report.plan.manual.first { $0.resource.name == "order" }?.reasons.first == "http[1] is more specific than http[0]: an HTTPRoute would try it first, Istio tries http[0] first")
        let rewrite = try #require(report.plan.generated("HTTPRoute", "shop", "rewrite"))
        let rule = try #require(ManifestLoader.parse(rewrite.yaml, file: "r").manifests.first?.spec["rules"]?.items?.first)
        #expect(rule["matches"] == .sequence([.object(["path": .object(["type": .string("PathPrefix"), "value": .string("/")])])]))
        #expect(rule["filters"]?.items?.first?["urlRewrite"]?["path"] == .object(["type": .string("ReplacePrefixMatch"), "replacePrefixMatch": .string("/v2")]))
        #expect(report.plan.manual.first { $0.resource.name == "moved" }?.reasons.contains("http[0].redirect.redirectCode 307: HTTPRoute redirects are 301 or 302 only") == true)
        #expect(report.plan.manual.first { $0.resource.name == "consumer" }?.reasons.first?.contains("consumer route") == true)
    }

    @Test("a VirtualService also bound to a gateway is translated but kept for the gateway")
    func keptForGateway() {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: both, namespace: shop}
            spec: {hosts: [web], gateways: [mesh, istio-system/public], http: [{route: [{destination: {host: web}}]}]}
            """)
        #expect(report.plan.generated("HTTPRoute", "shop", "both") != nil)
        #expect(report.plan.manual.first { $0.resource.name == "both" }?.reasons.first?.hasPrefix("also bound to gateway istio-system/public: keep it") == true)
        #expect(!report.plan.steps.flatMap(\.commands).contains("kubectl delete virtualservice both -n shop"))
    }

    @Test("untranslatable routes get a manual note naming every field")
    func manual() throws {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: api, namespace: shop}
            spec:
              hosts: [api]
              http:
              - match: [{headers: {x-user: {prefix: a}}}]
                retries: {attempts: 3}
                fault: {abort: {httpStatus: 503, percentage: {value: 1}}}
                route: [{destination: {host: api}}]
            """)
        let item = try #require(report.plan.manual.first { $0.resource.name == "api" })
        #expect(item.reasons.contains("http[0].retries: no standard HTTPRoute equivalent"))
        #expect(item.reasons.contains("http[0].fault: no standard HTTPRoute equivalent"))
        #expect(item.reasons.contains("http[0].match[0].headers.x-user: only exact/regex matches translate"))
        #expect(item.reasons.contains("http[0].route[0]: shop/api has 2 ports and the destination names none"))
        #expect(report.plan.generated("HTTPRoute", "shop", "api") == nil)
        #expect(!report.plan.steps.flatMap(\.commands).contains("kubectl delete virtualservice api -n shop"))
    }

    @Test("DestinationRule traffic policy needs a waypoint; ISTIO_MUTUAL alone does not")
    func destinationRules() {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: api, namespace: shop}
            spec: {host: api, trafficPolicy: {connectionPool: {http: {http2MaxRequests: 100}}, outlierDetection: {consecutive5xxErrors: 5}}}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: web, namespace: shop}
            spec: {host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
            """)
        #expect(report.finding("DestinationRule", "shop", "api")?.placement == .waypoint)
        #expect(report.finding("DestinationRule", "shop", "api")?.reasons == ["trafficPolicy.connectionPool for api", "trafficPolicy.outlierDetection for api"])
        #expect(report.finding("DestinationRule", "shop", "web")?.placement == .unaffected)
    }

    @Test("Gateway API routes: Service parent needs a waypoint, Gateway parent does not")
    func gatewayAPIRoutes() {
        let report = Self.analyze("""
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: mesh, namespace: shop}
            spec: {parentRefs: [{group: "", kind: Service, name: api, port: 80}], rules: [{backendRefs: [{name: api, port: 80}]}]}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: GRPCRoute
            metadata: {name: grpc, namespace: shop}
            spec: {parentRefs: [{kind: Service, name: api}]}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: edge, namespace: shop}
            spec: {parentRefs: [{name: public, namespace: istio-ingress}]}
            """)
        #expect(report.finding("HTTPRoute", "shop", "mesh")?.placement == .waypoint)
        #expect(report.finding("GRPCRoute", "shop", "grpc")?.placement == .waypoint)
        #expect(report.diagnostics.contains { $0.resource?.name == "grpc" && $0.message.hasPrefix("parentRef Service api has no group") })
        #expect(report.finding("HTTPRoute", "shop", "edge")?.placement == .ingressGateway)
    }

    @Test("egress ServiceEntry, Sidecar, Telemetry")
    func otherKinds() {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: payments-api, namespace: shop}
            spec: {hosts: [api.stripe.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS}
            ---
            apiVersion: networking.istio.io/v1
            kind: Sidecar
            metadata: {name: default, namespace: shop}
            spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: traces, namespace: shop}
            spec: {tracing: [{randomSamplingPercentage: 10}]}
            """)
        #expect(report.finding("ServiceEntry", "shop", "payments-api")?.placement == .waypoint)
        #expect(report.plan.steps.flatMap(\.commands).contains("kubectl label serviceentry payments-api -n shop istio.io/use-waypoint=waypoint"))
        #expect(report.finding("Sidecar", "shop", "default")?.placement == .notUsed)
        #expect(report.diagnostics.contains { $0.message.hasPrefix("outboundTrafficPolicy REGISTRY_ONLY is lost") })
        #expect(report.finding("Telemetry", "shop", "traces")?.placement == .waypoint)
        #expect(report.plan.waypoints.first?.scope == .namespace)
    }
}
