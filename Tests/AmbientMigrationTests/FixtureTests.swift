import AmbientMigration
import Foundation
import Testing

/// The shop fixture (Fixtures/shop): an app over two namespaces, with an ingress-only L4
/// policy on the frontend, L7 method-restricted policies on two backend services, a route
/// that sends all of one service's traffic to one version, and a route attached to the
/// ingress gateway.
@Suite("migration analyzer on the shop fixture")
struct FixtureTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/shop").path

    static func report() -> MigrationReport {
        MigrationAnalyzer().analyze(ManifestLoader.load(paths: [Self.fixture]))
    }

    @Test("exactly the L7 policies and the service-attached route need a waypoint, in backend")
    func classification() throws {
        let report = Self.report()
        #expect(!report.hasErrors, "\(report.diagnostics)")
        let waypoint = Set(report.findings.filter { $0.placement == .waypoint }.map(\.resource.description))
        #expect(waypoint == [
            "AuthorizationPolicy backend/orders-methods",
            "AuthorizationPolicy backend/payments-post-only",
            "VirtualService backend/reviews",
        ])
        for finding in report.findings where finding.placement == .waypoint {
            #expect(finding.waypointNamespace == "backend", "\(finding)")
        }
        let orders = try #require(report.finding("AuthorizationPolicy", "backend", "orders-methods"))
        #expect(orders.services == ["backend/orders"])
        #expect(orders.reasons.contains("rules[0].to.operation.methods [GET, POST]"), "\(orders.reasons)")
        #expect(report.finding("VirtualService", "backend", "reviews")?.services == ["backend/reviews"])

        #expect(report.finding("AuthorizationPolicy", "frontend", "web-ingress-only")?.placement == .nodeProxy)
        #expect(report.finding("AuthorizationPolicy", "frontend", "web-ingress-only")?.reasons == [
            "rules[0].from.source.principals [cluster.local/ns/frontend/sa/shop-gateway-istio]",
            "rules[0].to.operation.ports [8080]",
        ])
        #expect(report.finding("HTTPRoute", "frontend", "web")?.placement == .ingressGateway)
        #expect(report.finding("Gateway", "frontend", "shop-gateway")?.placement == .ingressGateway)
        #expect(report.finding("AuthorizationPolicy", "backend", "postgres-backend-only")?.placement == .nodeProxy)
        #expect(report.finding("PeerAuthentication", "backend", "default")?.placement == .nodeProxy)
        #expect(report.finding("DestinationRule", "backend", "reviews")?.placement == .unaffected)
        #expect(report.finding("Sidecar", "backend", "default")?.placement == .notUsed)
        #expect(report.finding("ConfigMap", "backend", "shop-settings")?.placement == .unknown)
        #expect(report.inventory.namespaces == ["backend", "frontend"])
        #expect(report.inventory.services == 5)
        #expect(report.inventory.workloads == 6)
    }

    @Test("both selector-based L7 ALLOW policies are flagged: they would deny everything")
    func criticalWarnings() {
        let report = Self.report()
        let critical = report.diagnostics.filter { $0.severity == .critical }
        #expect(Set(critical.compactMap(\.resource?.name)) == ["orders-methods", "payments-post-only"])
        for diagnostic in critical {
            #expect(diagnostic.message.contains("allows nothing and every connection to"), "\(diagnostic.message)")
            #expect(diagnostic.message.contains("is DENIED"))
        }
        // The unknown kind is reported, not fatal.
        #expect(report.diagnostics.contains { $0.severity == .note && $0.message.contains("unknown kind ConfigMap") })
    }

    @Test("one namespace waypoint in backend; frontend only moves to ambient")
    func waypointsAndNamespaces() throws {
        let plan = Self.report().plan
        #expect(plan.waypoints.map { "\($0.namespace)/\($0.name)/\($0.scope.rawValue)" } == ["backend/waypoint/namespace"])
        #expect(plan.waypoints.first?.services == ["orders", "payments", "reviews"])
        #expect(plan.namespaces.map(\.namespace) == ["backend", "frontend"])
        for change in plan.namespaces {
            #expect(change.add == ["istio.io/dataplane-mode": "ambient"])
            #expect(change.remove == ["istio-injection"])
        }
        let commands = plan.steps.flatMap(\.commands)
        #expect(commands.contains("istioctl waypoint apply -n backend --name waypoint --enroll-namespace --wait"))
        #expect(commands.contains("kubectl label namespace frontend istio.io/dataplane-mode=ambient --overwrite"))
        #expect(commands.contains("kubectl label namespace backend istio-injection-"))
        #expect(commands.contains("kubectl delete authorizationpolicy orders-methods -n backend"))
        #expect(commands.contains("kubectl rollout restart statefulset -n backend"))
        #expect(!commands.contains { $0.contains("web-ingress-only") })
        // The L4 database policy admits namespace backend, which the waypoint is in, so any
        // client through the waypoint would pass it: its check moves to the waypoint too.
        let postgres = Self.report().diagnostics.filter { $0.resource?.name == "postgres-backend-only" }
        #expect(postgres.map(\.message) == [
            "its source checks on postgres would see waypoint waypoint's identity for traffic through it, so any client of the waypoint would pass them; generated postgres-backend-only-waypoint (the same checks at the waypoint)",
        ])
        #expect(plan.generated("AuthorizationPolicy", "backend", "postgres-backend-only-via-waypoint") == nil)
        let twin = try #require(plan.generated("AuthorizationPolicy", "backend", "postgres-backend-only-waypoint"))
        let parsed = try #require(ManifestLoader.parse(twin.yaml, file: "t").manifests.first)
        #expect(parsed.spec["targetRefs"] == .sequence([.object(["group": .string(""), "kind": .string("Service"), "name": .string("postgres")])]))
        #expect(!commands.contains("kubectl delete authorizationpolicy postgres-backend-only -n backend"))
    }

    @Test("the targetRefs twins are valid manifests: parsed back and checked field by field")
    func twins() throws {
        let report = Self.report()
        let originals = ManifestLoader.load(paths: [Self.fixture]).manifests
        for (name, service) in [("orders-methods", "orders"), ("payments-post-only", "payments")] {
            let generated = try #require(report.plan.generated("AuthorizationPolicy", "backend", "\(name)-waypoint"))
            #expect(generated.source == ResourceID(kind: "AuthorizationPolicy", namespace: "backend", name: name))
            #expect(generated.path == "backend/authorizationpolicy-\(name)-waypoint.yaml")
            let parsed = ManifestLoader.parse(generated.yaml, file: generated.path)
            #expect(parsed.diagnostics.isEmpty, "\(parsed.diagnostics)")
            let twin = try #require(parsed.manifests.first)
            #expect(parsed.manifests.count == 1)
            #expect(twin.apiVersion == "security.istio.io/v1")
            #expect(twin.kind == "AuthorizationPolicy")
            #expect(twin.name == "\(name)-waypoint")
            #expect(twin.declaredNamespace == "backend")
            #expect(twin.spec["selector"] == nil)
            #expect(twin.spec["targetRefs"] == .sequence([.object(["group": .string(""), "kind": .string("Service"), "name": .string(service)])]))
            let original = try #require(originals.first { $0.kind == "AuthorizationPolicy" && $0.name == name })
            #expect(twin.spec["rules"] == original.spec["rules"])
            #expect(twin.spec["action"] == original.spec["action"])
            // Analysed again, the twin is already at a waypoint and needs nothing more.
            let again = MigrationAnalyzer().analyze(parsed)
            #expect(again.findings.first?.reasons.first?.hasPrefix("already attached through targetRefs") == true)
            #expect(again.plan.generated.map(\.resource.kind) == ["Gateway"])
        }
    }

    @Test("each L7 ALLOW policy gets an L4 companion that lets the waypoint reach its pods")
    func companions() throws {
        let plan = Self.report().plan
        for (name, app) in [("orders-methods", "orders"), ("payments-post-only", "payments")] {
            let generated = try #require(plan.generated("AuthorizationPolicy", "backend", "\(name)-via-waypoint"))
            let companion = try #require(ManifestLoader.parse(generated.yaml, file: generated.path).manifests.first)
            #expect(companion.spec["selector"] == .object(["matchLabels": .object(["app": .string(app)])]))
            #expect(companion.spec["action"] == .string("ALLOW"))
            #expect(companion.spec["rules"] == .sequence([.object(["from": .sequence([.object([
                "source": .object(["principals": .sequence([.string("cluster.local/ns/backend/sa/waypoint")])]),
            ])])])]))
            // Analysed again: an L4 policy, enforced by ztunnel.
            #expect(MigrationAnalyzer().analyze(ManifestLoader.parse(generated.yaml, file: "c")).findings.first?.placement == .nodeProxy)
        }
        let titles = plan.steps.map(\.title)
        let apply = try #require(titles.firstIndex { $0.hasPrefix("Apply the waypoint policies") })
        let restart = try #require(titles.firstIndex { $0.hasPrefix("Restart the workloads") })
        let delete = try #require(titles.firstIndex { $0.hasPrefix("Delete what the waypoints replace") })
        #expect(apply < restart && restart < delete, "\(titles)")
    }

    @Test("the version route translates to an HTTPRoute on the Service plus a version Service")
    func routeTranslation() throws {
        let plan = Self.report().plan
        let route = try #require(plan.generated("HTTPRoute", "backend", "reviews"))
        let parsedRoute = try #require(ManifestLoader.parse(route.yaml, file: "route").manifests.first)
        #expect(parsedRoute.apiVersion == "gateway.networking.k8s.io/v1")
        #expect(parsedRoute.spec["parentRefs"] == .sequence([.object(["group": .string(""), "kind": .string("Service"), "name": .string("reviews")])]))
        #expect(parsedRoute.spec["rules"] == .sequence([.object([
            "backendRefs": .sequence([.object(["name": .string("reviews-v2"), "port": .int(9080)])]),
        ])]))
        let version = try #require(plan.generated("Service", "backend", "reviews-v2"))
        let parsedService = try #require(ManifestLoader.parse(version.yaml, file: "svc").manifests.first)
        #expect(parsedService.spec["selector"]?.stringMap == ["app": "reviews", "version": "v2"])
        #expect(parsedService.spec["ports"] == .sequence([.object(["name": .string("http"), "port": .int(9080), "targetPort": .int(9080)])]))
        #expect(plan.generated("Service", "backend", "reviews-v1") == nil)
        #expect(plan.generated("Gateway", "backend", "waypoint") != nil)
        #expect(plan.manual.isEmpty, "\(plan.manual)")
    }

    @Test("JSON output decodes back to the same report; text colours only when asked")
    func outputs() throws {
        let report = Self.report()
        let json = try report.jsonText()
        let decoded = try JSONDecoder().decode(MigrationReport.self, from: Data(json.utf8))
        #expect(decoded.findings == report.findings)
        #expect(decoded.diagnostics == report.diagnostics)
        #expect(decoded.plan.generated == report.plan.generated)
        let plain = report.text(color: false)
        #expect(!plain.contains("\u{1B}["))
        #expect(plain.contains("AuthorizationPolicy backend/orders-methods"))
        #expect(plain.contains("$ istioctl waypoint apply -n backend --name waypoint --enroll-namespace --wait"))
        #expect(report.text(color: true).contains("\u{1B}[33;1mwaypoint"))
    }
}
