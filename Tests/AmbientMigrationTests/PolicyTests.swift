import AmbientMigration
import Testing

/// Classification rules, one behaviour per test, from istiod's ztunnel conversion
/// (`pilot/pkg/serviceregistry/ambient/authorization.go`).
@Suite("migration analyzer classification rules")
struct PolicyTests {
    static let workloads = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api, namespace: shop}
        spec:
          template:
            metadata: {labels: {app: api}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: api, namespace: shop}
        spec:
          selector: {app: api}
          ports: [{name: http, port: 80}, {name: grpc, port: 9000}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          ports: [{name: http, port: 80}]

        """

    static func analyze(_ text: String) -> MigrationReport {
        MigrationAnalyzer().analyze(ManifestLoader.parse(Self.workloads + "---\n" + text, file: "test.yaml"))
    }

    static func policy(_ name: String, action: String = "ALLOW", selector: String = "{matchLabels: {app: api}}", rules: String) -> String {
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: \(name), namespace: shop}
        spec:
          selector: \(selector)
          action: \(action)
          rules: \(rules)

        """
    }

    @Test("L4 attributes (principals, namespaces, ipBlocks, serviceAccounts, ports, L4 when keys) stay at the node proxy")
    func l4() {
        let report = Self.analyze(Self.policy("l4", rules: """
            [{from: [{source: {principals: [a], notNamespaces: [shop], ipBlocks: [10.0.0.0/8], serviceAccounts: [shop/x]}}], to: [{operation: {notPorts: ["22"]}}], when: [{key: source.ip, values: [10.1.0.0/16]}, {key: destination.port, notValues: ["8080"]}]}]
            """))
        let finding = report.finding("AuthorizationPolicy", "shop", "l4")
        #expect(finding?.placement == .nodeProxy)
        #expect(finding?.reasons.count == 7)
        #expect(!report.diagnostics.contains { $0.resource?.name == "l4" })
    }

    @Test("HTTP attributes need a waypoint: methods, paths, hosts, requestPrincipals, remoteIpBlocks, request headers")
    func l7() {
        for (name, rule) in [
            ("methods", "[{to: [{operation: {methods: [GET]}}]}]"),
            ("paths", "[{to: [{operation: {notPaths: [/admin]}}]}]"),
            ("hosts", "[{to: [{operation: {hosts: [a.example]}}]}]"),
            ("jwt", "[{from: [{source: {requestPrincipals: [\"*\"]}}]}]"),
            ("xff", "[{from: [{source: {remoteIpBlocks: [1.2.3.4]}}]}]"),
            ("header", "[{when: [{key: \"request.headers[x-user]\", values: [a]}]}]"),
            ("sni", "[{when: [{key: connection.sni, values: [a]}]}]"),
        ] {
            let finding = Self.analyze(Self.policy(name, rules: rule)).finding("AuthorizationPolicy", "shop", name)
            #expect(finding?.placement == .waypoint, "\(name)")
            #expect(finding?.services == ["shop/api"], "\(name)")
        }
    }

    @Test("CUSTOM and AUDIT need a waypoint; a policy with no rules stays L4")
    func actions() {
        let report = Self.analyze(Self.policy("ext", action: "CUSTOM", rules: "[{to: [{operation: {ports: [\"80\"]}}]}]")
            + "---\n" + Self.policy("nothing", rules: "[]"))
        #expect(report.finding("AuthorizationPolicy", "shop", "ext")?.placement == .waypoint)
        #expect(report.finding("AuthorizationPolicy", "shop", "ext")?.reasons.first?.hasPrefix("action CUSTOM") == true)
        #expect(report.finding("AuthorizationPolicy", "shop", "nothing")?.placement == .nodeProxy)
        #expect(report.finding("AuthorizationPolicy", "shop", "nothing")?.reasons == ["ALLOW with no rules (allows nothing): enforced by ztunnel as is"])
    }

    @Test("an ALLOW policy mixing L4 and L7 rules: only the L4 rules would stay")
    func mixedAllow() throws {
        let report = Self.analyze(Self.policy("mixed", rules: "[{from: [{source: {namespaces: [shop]}}]}, {to: [{operation: {methods: [GET]}}]}]"))
        let critical = try #require(report.diagnostics.first { $0.severity == .critical })
        #expect(critical.message.contains("only rules 0 stay, and everything rules 1 allowed is DENIED"), "\(critical.message)")
    }

    @Test("DENY with HTTP-only clauses would stop denying; DENY with L4 parts would deny more")
    func deny() throws {
        let report = Self.analyze(Self.policy("deny-get", action: "DENY", rules: "[{to: [{operation: {methods: [DELETE]}}]}]")
            + "---\n" + Self.policy("deny-port", action: "DENY", rules: "[{to: [{operation: {ports: [\"80\"], methods: [DELETE]}}]}]"))
        let dropped = try #require(report.diagnostics.first { $0.resource?.name == "deny-get" })
        #expect(dropped.severity == .critical)
        #expect(dropped.message.contains("would be ALLOWED"), "\(dropped.message)")
        let broader = try #require(report.diagnostics.first { $0.resource?.name == "deny-port" })
        #expect(broader.severity == .warning)
        #expect(broader.message.contains("more than intended"), "\(broader.message)")
        #expect(report.plan.generated("AuthorizationPolicy", "shop", "deny-get-waypoint") != nil)
        // A `when` condition is a clause of its own: one HTTP condition empties it, even next to ports.
        let conditioned = Self.analyze(Self.policy("deny-header", action: "DENY", rules: """
            [{to: [{operation: {ports: ["80"]}}], when: [{key: source.ip, values: [10.0.0.0/8]}, {key: "request.headers[x-debug]", values: ["1"]}]}]
            """))
        #expect(conditioned.diagnostics.first { $0.resource?.name == "deny-header" }?.severity == .critical)
    }

    @Test("namespace-wide and mesh-wide L7 policies: twins target every Service, or every waypoint")
    func scopes() throws {
        let report = Self.analyze(Self.policy("ns-wide", selector: "{}", rules: "[{to: [{operation: {methods: [GET]}}]}]") + """
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: mesh-wide, namespace: istio-system}
            spec:
              action: DENY
              rules: [{to: [{operation: {paths: [/debug]}}]}]
            """)
        let namespaceTwin = try #require(report.plan.generated("AuthorizationPolicy", "shop", "ns-wide-waypoint"))
        let parsed = try #require(ManifestLoader.parse(namespaceTwin.yaml, file: "t").manifests.first)
        #expect(parsed.spec["targetRefs"]?.items?.compactMap { $0["name"]?.string } == ["api", "web"])
        #expect(report.plan.waypoints.map(\.scope) == [.namespace])
        let meshTwin = try #require(report.plan.generated("AuthorizationPolicy", "istio-system", "mesh-wide-waypoint"))
        let mesh = try #require(ManifestLoader.parse(meshTwin.yaml, file: "t").manifests.first)
        #expect(mesh.spec["targetRefs"] == .sequence([.object(["group": .string("gateway.networking.k8s.io"), "kind": .string("GatewayClass"), "name": .string("istio-waypoint")])]))
        #expect(!report.plan.waypoints.contains { $0.namespace == "istio-system" })
    }

    @Test("per-service waypoint where only a minority of Services need L7; an L4 ALLOW behind it moves its checks there")
    func perService() throws {
        var text = Self.policy("api-get", rules: "[{to: [{operation: {methods: [GET]}}]}]")
        text += "---\n" + Self.policy("api-l4", rules: "[{from: [{source: {principals: [cluster.local/ns/other/sa/client]}}]}]")
        for name in ["a", "b"] {
            text += "---\napiVersion: v1\nkind: Service\nmetadata: {name: \(name), namespace: shop}\nspec: {selector: {app: \(name)}}\n"
        }
        let report = Self.analyze(text)
        let waypoint = try #require(report.plan.waypoints.first)
        #expect(waypoint.scope == .service)
        #expect(waypoint.services == ["api"])
        let commands = report.plan.steps.flatMap(\.commands)
        #expect(commands.contains("istioctl waypoint apply -n shop --name waypoint --wait"))
        #expect(commands.contains("kubectl label service api -n shop istio.io/use-waypoint=waypoint"))
        let identity = try #require(report.diagnostics.first { $0.resource?.name == "api-l4" })
        #expect(identity.message.hasSuffix("generated api-l4-waypoint (the same checks at the waypoint) and api-l4-via-waypoint (ztunnel admits the waypoint)"), "\(identity.message)")
        let companion = try #require(report.plan.generated("AuthorizationPolicy", "shop", "api-l4-via-waypoint"))
        let parsed = try #require(ManifestLoader.parse(companion.yaml, file: "c").manifests.first)
        #expect(parsed.spec["rules"] == .sequence([.object(["from": .sequence([.object([
            "source": .object(["principals": .sequence([.string("cluster.local/ns/shop/sa/waypoint")])]),
        ])])])]))
        #expect(report.plan.generated("AuthorizationPolicy", "shop", "api-l4-waypoint") != nil)
    }

    @Test("twins that would widen a policy, headless Services, DENY not-lists behind a waypoint")
    func twinScope() throws {
        let report = Self.analyze("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: api-v2, namespace: shop}
            spec: {template: {metadata: {labels: {app: api, version: v2}}}}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: api-headless, namespace: shop}
            spec: {clusterIP: None, selector: {app: api}}
            ---

            """ + Self.policy("v2-only", selector: "{matchLabels: {version: v2}}", rules: "[{to: [{operation: {methods: [GET]}}]}]")
            + "---\n" + Self.policy("deny-others", action: "DENY", rules: "[{from: [{source: {notNamespaces: [shop2]}}]}]"))
        let wider = try #require(report.diagnostics.first { $0.resource?.name == "v2-only" && $0.message.hasPrefix("Service api also selects") })
        #expect(wider.message.contains("Deployment api,"), "\(wider.message)")
        let twin = try #require(report.plan.generated("AuthorizationPolicy", "shop", "v2-only-waypoint"))
        let parsed = try #require(ManifestLoader.parse(twin.yaml, file: "t").manifests.first)
        #expect(parsed.spec["targetRefs"]?.items?.compactMap { $0["name"]?.string } == ["api"], "no headless Service")
        let deny = try #require(report.diagnostics.first { $0.resource?.name == "deny-others" })
        #expect(deny.message.contains("traffic through the waypoint would be denied; add it to notPrincipals"), "\(deny.message)")
    }

    @Test("PeerAuthentication and RequestAuthentication; gateway-selected policies stay at the gateway")
    func otherSecurityKinds() {
        let report = Self.analyze("""
            apiVersion: security.istio.io/v1
            kind: PeerAuthentication
            metadata: {name: default, namespace: shop}
            spec: {mtls: {mode: STRICT}, portLevelMtls: {"9000": {mode: PERMISSIVE}}}
            ---
            apiVersion: security.istio.io/v1
            kind: RequestAuthentication
            metadata: {name: jwt, namespace: shop}
            spec:
              selector: {matchLabels: {app: api}}
              jwtRules: [{issuer: https://issuer.example}]
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: ingress-jwt, namespace: shop}
            spec:
              selector: {matchLabels: {istio: ingressgateway}}
              rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: helm-gateway, namespace: shop}
            spec:
              selector: {matchLabels: {istio: ingress}}
              rules: [{to: [{operation: {paths: [/admin]}}]}]
            """)
        #expect(report.finding("AuthorizationPolicy", "shop", "helm-gateway")?.placement == .ingressGateway)
        #expect(report.finding("PeerAuthentication", "shop", "default")?.placement == .nodeProxy)
        #expect(report.diagnostics.contains { $0.message.hasPrefix("portLevelMtls on a namespace- or mesh-wide PeerAuthentication is ignored") })
        #expect(report.finding("RequestAuthentication", "shop", "jwt")?.placement == .waypoint)
        #expect(report.plan.generated("RequestAuthentication", "shop", "jwt-waypoint") != nil)
        #expect(report.finding("AuthorizationPolicy", "shop", "ingress-jwt")?.placement == .ingressGateway)
    }
}
