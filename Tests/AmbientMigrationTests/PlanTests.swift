import AmbientMigration
import Testing

/// Plan details beyond the fixture: existing waypoints, egress, ingress backends, gateway
/// pods in scope, mesh-wide policies, name collisions, pods that ask for a sidecar.
@Suite("migration analyzer plan details")
struct PlanTests {
    static func analyze(_ text: String) -> MigrationReport {
        PolicyTests.analyze(text)
    }

    @Test("an egress-only ServiceEntry gets a per-service waypoint and its own label, not the namespace")
    func egressOnly() throws {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: stripe, namespace: shop}
            spec: {hosts: [api.stripe.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS}
            """)
        let waypoint = try #require(report.plan.waypoints.first)
        #expect(waypoint.scope == .service)
        #expect(waypoint.services.isEmpty)
        let commands = report.plan.steps.flatMap(\.commands)
        #expect(commands.contains("istioctl waypoint apply -n shop --name waypoint --wait"))
        #expect(commands.contains("kubectl label serviceentry stripe -n shop istio.io/use-waypoint=waypoint"))
        #expect(!commands.contains { $0.contains("--enroll-namespace") })
    }

    @Test("an existing waypoint is reused, not generated")
    func existingWaypoint() throws {
        let report = Self.analyze("""
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: shop-waypoint, namespace: shop}
            spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
            ---
            """ + "\n" + PolicyTests.policy("get", rules: "[{to: [{operation: {methods: [GET]}}]}]"))
        let waypoint = try #require(report.plan.waypoints.first)
        #expect(waypoint.existing)
        #expect(waypoint.name == "shop-waypoint")
        #expect(report.plan.generated("Gateway", "shop", "waypoint") == nil)
        #expect(report.plan.steps.flatMap(\.commands).contains("kubectl label namespace shop istio.io/use-waypoint=shop-waypoint --overwrite"))
        let companion = try #require(report.plan.generated("AuthorizationPolicy", "shop", "get-via-waypoint"))
        #expect(companion.yaml.contains("cluster.local/ns/shop/sa/shop-waypoint"))
    }

    @Test("a workload-only waypoint is not reused for Service traffic")
    func workloadWaypoint() throws {
        let report = Self.analyze("""
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: pods-only, namespace: shop, labels: {istio.io/waypoint-for: workload}}
            spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
            ---
            """ + "\n" + PolicyTests.policy("get", rules: "[{to: [{operation: {methods: [GET]}}]}]"))
        let waypoint = try #require(report.plan.waypoints.first)
        #expect(!waypoint.existing)
        #expect(waypoint.name == "waypoint")
        #expect(report.diagnostics.contains { $0.message.hasPrefix("waypoint pods-only is istio.io/waypoint-for=workload") })
    }

    @Test("Services that ingress routes send to get istio.io/ingress-use-waypoint")
    func ingressBackends() {
        let report = Self.analyze(PolicyTests.policy("get", rules: "[{to: [{operation: {methods: [GET]}}]}]") + """
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: edge, namespace: shop}
            spec: {parentRefs: [{name: public}], rules: [{backendRefs: [{name: api, port: 80}]}]}
            """)
        #expect(report.plan.waypoints.first?.ingressServices == ["api"])
        #expect(report.plan.steps.flatMap(\.commands).contains("kubectl label service api -n shop istio.io/ingress-use-waypoint=true"))
    }

    @Test("a namespace-wide policy also covering gateway pods is warned about")
    func gatewayPodsInScope() {
        let report = Self.analyze("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: ingress, namespace: shop}
            spec: {template: {metadata: {labels: {istio: ingress}}}}
            ---
            """ + "\n" + PolicyTests.policy("all-get", selector: "{}", rules: "[{to: [{operation: {methods: [GET]}}]}]"))
        #expect(report.diagnostics.contains { $0.resource?.name == "all-get" && $0.message.hasPrefix("it also applies to the gateway pods of shop/ingress") })
    }

    @Test("a mesh-wide ALLOW with HTTP rules: twin on every waypoint, no mesh-wide companion, uncovered namespaces named")
    func meshWideAllow() throws {
        let report = Self.analyze("""
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: mesh-get, namespace: istio-system}
            spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}
            """)
        let twin = try #require(report.plan.generated("AuthorizationPolicy", "istio-system", "mesh-get-waypoint"))
        #expect(ManifestLoader.parse(twin.yaml, file: "t").manifests.first?.spec["targetRefs"]?.items?.first?["kind"] == .string("GatewayClass"))
        // A mesh-wide ALLOW for waypoints only would cut off every workload without one.
        #expect(report.plan.generated("AuthorizationPolicy", "istio-system", "mesh-get-via-waypoint") == nil)
        let item = try #require(report.plan.manual.first { $0.resource.name == "mesh-get" })
        #expect(item.reasons.first?.contains("namespaces without one: shop") == true, "\(item.reasons)")
        #expect(report.diagnostics.first { $0.severity == .critical }?.message.contains("every namespace without one loses them") == true)
    }

    @Test("generated names never overwrite objects of the input")
    func collisions() throws {
        let report = Self.analyze("""
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: api, namespace: shop}
            spec: {parentRefs: [{name: public}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: api, namespace: shop}
            spec: {hosts: [api], http: [{route: [{destination: {host: api, port: {number: 80}}}]}]}
            """)
        #expect(report.plan.generated("HTTPRoute", "shop", "api") == nil)
        let item = try #require(report.plan.manual.first { $0.resource.name == "api" && $0.resource.kind == "VirtualService" })
        #expect(item.reasons.first?.hasPrefix("HTTPRoute shop/api would be generated") == true)
        #expect(!report.plan.steps.flatMap(\.commands).contains("kubectl delete virtualservice api -n shop"), "kept: its replacement is not generated")
    }

    @Test("pods that ask for a sidecar themselves are warned about")
    func podRequestsSidecar() {
        let report = Self.analyze("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: legacy, namespace: shop}
            spec: {template: {metadata: {labels: {app: legacy, sidecar.istio.io/inject: "true"}}}}
            """)
        #expect(report.diagnostics.contains { $0.resource?.name == "legacy" && $0.message.hasPrefix("its pod template asks for a sidecar") })
    }

    @Test("redirects and exact-path rewrites translate; an existing version Service is reused, a different one is not overwritten")
    func translations() throws {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: web, namespace: shop}
            spec:
              hosts: [web]
              http:
              - match: [{uri: {exact: /old}}]
                redirect: {uri: /new, redirectCode: 302}
              - match: [{uri: {exact: /legacy}}]
                rewrite: {uri: /modern}
                route: [{destination: {host: web}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: web, namespace: shop}
            spec: {host: web, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: web-v1, namespace: shop}
            spec: {selector: {app: web, version: v1}, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: web-v2, namespace: shop}
            spec: {selector: {app: other}, ports: [{port: 80}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: web-v1-only, namespace: shop}
            spec: {hosts: [web], http: [{route: [{destination: {host: web, subset: v1}}]}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: web-v2-only, namespace: shop}
            spec: {hosts: [web], http: [{route: [{destination: {host: web, subset: v2}}]}]}
            """)
        let route = try #require(report.plan.generated("HTTPRoute", "shop", "web"))
        let rules = try #require(ManifestLoader.parse(route.yaml, file: "r").manifests.first?.spec["rules"]?.items)
        #expect(rules[0]["filters"] == .sequence([.object(["type": .string("RequestRedirect"), "requestRedirect": .object([
            "path": .object(["type": .string("ReplaceFullPath"), "replaceFullPath": .string("/new")]), "statusCode": .int(302),
        ])])]))
        #expect(rules[1]["filters"]?.items?.first?["urlRewrite"]?["path"] == .object(["type": .string("ReplaceFullPath"), "replaceFullPath": .string("/modern")]))
        #expect(report.plan.generated("HTTPRoute", "shop", "web-v1-only") != nil)
        #expect(report.plan.generated("Service", "shop", "web-v1") == nil, "reused")
        #expect(report.plan.manual.first { $0.resource.name == "web-v2-only" }?.reasons.first == "http[0].route[0]: Service shop/web-v2 exists with another selector than subset v2 needs")
    }
}
