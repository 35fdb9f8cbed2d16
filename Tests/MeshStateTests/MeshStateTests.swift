import InternetAddress
import Foundation
import MeshState
import MeshTestSupport
import Testing

@Suite("ztunnel local config, store and L4 authorization")
struct MeshStateTests {
    static func fixture(_ name: String) throws -> String {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
        return try String(contentsOf: url, encoding: .utf8)
    }

    static func ip(_ text: String) -> IPAddress { IPAddress(text)! }

    @Test("ztunnel's own examples/localhost.yaml loads unchanged, with the local-config defaults")
    func ztunnelExample() throws {
        let config = try LocalConfig.parse(Self.fixture("ztunnel-localhost.yaml"))
        #expect(config.workloads.map(\.name) == ["local", "local-tcp"])
        let local = config.workloads[0]
        #expect(local.uid == "cluster1//v1/Pod/default/local")
        #expect(local.tunnelProtocol == .hbone && config.workloads[1].tunnelProtocol == .tcp)
        #expect(local.workloadIPs == [Self.ip("127.0.0.1")])
        #expect(local.services["default/example.com"] == [80: 8080])
        #expect(local.trustDomain == "", "the local config's default, not cluster.local")
        #expect(local.identity.uri == "spiffe:///ns/default/sa/default")
        #expect(config.policies.first?.key == "default/deny-9999")
        #expect(config.policies.first?.rules == [[[{ var m = Authorization.Match(); m.notDestinationPorts = [9999]; return m }()]]])
        #expect(config.services.map(\.vips) == [[NetworkAddress("/127.10.0.1")!], [NetworkAddress("remote/127.10.0.2")!]])
        #expect(config.services[0].subjectAltNames == ["spiffe://cluster.local/ns/default/sa/local"])
        // The same file without `dryRun` (ztunnel before 2026-01) loads too.
        let older = try Self.fixture("ztunnel-localhost.yaml").replacingOccurrences(of: "    dryRun: false\n", with: "")
        #expect(try LocalConfig.parse(older).policies.first?.dryRun == false)
    }

    @Test("invalid files are rejected with line, column and field path")
    func errors() throws {
        func failure(_ yaml: String) -> LocalConfigError? {
            do { _ = try LocalConfig.parse(yaml); return nil } catch { return error }
        }
        let unknownTop = failure("workloads: []\nwaypoints: []\n")
        #expect(unknownTop?.line == 2 && unknownTop?.path == "waypoints")
        #expect(unknownTop?.description.contains("unknown field `waypoints`") == true)
        let singular = failure("workloads:\n- namespace: default\n  workloadIp: 10.0.0.1\n  services: {}\n")
        #expect(singular?.line == 3 && singular?.column == 3 && singular?.path == "workloads[0].workloadIp", "\(String(describing: singular))")
        let missing = failure("workloads:\n- namespace: default\n  services: {}\n")
        #expect(missing?.description.contains("missing field `workloadIps`") == true)
        let badIP = failure("workloads:\n- namespace: default\n  workloadIps: [\"10.0.0.1/32\"]\n  services: {}\n")
        #expect(badIP?.path == "workloads[0].workloadIps[0]" && badIP?.line == 3)
        let lowercase = failure("workloads:\n- namespace: default\n  workloadIps: []\n  protocol: hbone\n  services: {}\n")
        #expect(lowercase?.description.contains("unknown variant `hbone`") == true && lowercase?.line == 4)
        let quotedPort = failure("services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {\"80\": 8080}}\n")
        #expect(quotedPort?.description.contains("expected an integer") == true)
        let bareVIP = failure("services:\n- {name: a, namespace: b, hostname: c, vips: [\"10.0.0.1\"], ports: {}}\n")
        #expect(bareVIP?.description.contains("network/ip") == true)
        let plainString = failure("policies:\n- {name: p, namespace: n, scope: Global, action: Allow, rules: [[[{principals: [\"x\"]}]]]}\n")
        #expect(plainString?.description.contains("YAML tag") == true)
        let cidr = failure("policies:\n- {name: p, namespace: n, scope: Global, action: Allow, rules: [[[{sourceIps: [\"10.0.0.1\"]}]]]}\n")
        #expect(cidr?.description.contains("prefix length") == true)
        #expect(failure("workloads: [unclosed") != nil)
        // 3 KiB of anchors and aliases that expand to 27 million policy matches ("billion laughs").
        let match = "&m {principals: [!Exact \"a\"]}"
        let rules1 = "&r1 [" + match + String(repeating: ",*m", count: 299) + "]"
        let rules2 = "&r2 [" + rules1 + String(repeating: ",*r1", count: 299) + "]"
        let rules3 = "[" + rules2 + String(repeating: ",*r2", count: 299) + "]"
        let bomb = failure("policies:\n- {name: p, namespace: n, scope: Global, action: Deny, rules: \(rules3)}\n")
        #expect(bomb?.description.contains("YAML aliases expand the file to more than \(LocalConfig.maximumValues) values at document 1") == true, "\(String(describing: bomb))")
        let keyBomb = failure("x: &x [" + String(repeating: "a,", count: 9) + "a]\ny: &y [" + String(repeating: "*x,", count: 9) + "*x]\n? [*y, *y]\n: 1\n")
        #expect(keyBomb?.description.contains("an alias inside a mapping key at line 3") == true && keyBomb?.line == 3, "\(String(describing: keyBomb))")
        #expect(failure("workloads: []\n---\npolicies: []\n")?.description.contains("more than one YAML document") == true)
        let aliased = try LocalConfig.parse("policies:\n- {name: p, namespace: n, scope: Global, action: Deny, rules: [[[&m {principals: [!Exact \"a\"]}], [*m]]]}\n")
        let policy = try #require(aliased.policies.first)
        #expect(policy.rules.count == 1 && policy.rules[0].count == 2)
        #expect(try LocalConfig.parse("") == LocalConfig())
        #expect(try LocalConfig.parse("---\n") == LocalConfig())
        // Inside a match, unknown keys are ignored as ztunnel does (an old snake_case key matches nothing).
        let snake = try LocalConfig.parse("policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: [[[{not_destination_ports: [9999]}]]]}\n")
        #expect(snake.policies[0].rules == [[[Authorization.Match()]]])
    }

    @Test("lookups: by UID, by address, by identity, services by VIP and hostname, healthy endpoints")
    func lookups() throws {
        let store = MeshStore(try LocalConfig.parse(Self.fixture("onebox.yaml")))
        #expect(store.workload(uid: "cluster1//v1/Pod/client/curl-allow")?.serviceAccount == "curl-allow")
        #expect(store.workload(at: Self.ip("fd00:88::20"))?.name == "httpbin-0")
        #expect(store.workload(namespace: "apps", name: "httpbin-1")?.status == .unhealthy)
        #expect(store.workloads(with: PeerIdentity(trustDomain: "cluster.local", namespace: "apps", serviceAccount: "httpbin")).count == 2)
        let service = try #require(store.service(vip: Self.ip("10.96.0.20")))
        #expect(service.hostname == "httpbin.apps.svc.cluster.local")
        #expect(store.service(namespace: "apps", hostname: "httpbin.apps.svc.cluster.local") == service)
        #expect(store.endpoints(of: service).map(\.workload.name) == ["httpbin-0"], "the unhealthy endpoint is left out")
        #expect(store.service(vip: Self.ip("10.96.0.20"), network: "other") == nil)
    }

    @Test("outbound: VIP → endpoint with target port over HBONE, workload IP, TCP destination, passthrough, errors")
    func outbound() throws {
        let store = MeshStore(try LocalConfig.parse(Self.fixture("onebox.yaml")))
        let client = try #require(store.workload(namespace: "client", name: "curl-allow"))
        var random = SystemRandomNumberGenerator()
        let viaVIP = try store.resolve(destination: Self.ip("10.96.0.20"), port: 8000, from: client, using: &random)
        guard case .hbone(let workload, let address, let target, let service) = viaVIP else { Issue.record("\(viaVIP)"); return }
        #expect(workload.name == "httpbin-0" && address == Self.ip("10.88.0.20") && target == 80 && service == "httpbin.apps.svc.cluster.local")
        #expect(try store.resolve(destination: Self.ip("10.88.0.20"), port: 80, from: client, using: &random)
            == .hbone(workload: workload, address: Self.ip("10.88.0.20"), targetPort: 80, service: nil))
        if case .tcp(let echo, _, let port, _) = try store.resolve(destination: Self.ip("10.88.0.30"), port: 7, from: client, using: &random) {
            #expect(echo.name == "tcp-echo" && port == 7)
        } else { Issue.record("a TCP workload") }
        #expect(try store.resolve(destination: Self.ip("203.0.113.5"), port: 443, from: client, using: &random) == .passthrough(address: Self.ip("203.0.113.5"), port: 443))
        #expect(throws: MeshStore.ResolutionError.portNotInService(service: "httpbin.apps.svc.cluster.local", port: 9999)) {
            try store.resolve(destination: Self.ip("10.96.0.20"), port: 9999, from: client, using: &random)
        }
        #expect(throws: MeshStore.ResolutionError.noHealthyEndpoint(service: "echo.legacy.svc.cluster.local")) {
            // Named port (0) and the endpoint's own map lacks it.
            try store.resolve(destination: Self.ip("10.96.0.30"), port: 9000, from: client, using: &random)
        }
    }

    @Test("L4 authorization: selector ALLOW by principal and port, global STRICT-style DENY, namespace dry-run, no policy means allow")
    func authorization() throws {
        let store = MeshStore(try LocalConfig.parse(Self.fixture("onebox.yaml")))
        let httpbin = try #require(store.workload(namespace: "apps", name: "httpbin-0"))
        let tcpEcho = try #require(store.workload(namespace: "legacy", name: "tcp-echo"))
        func connection(_ sa: String?, from source: String = "10.88.0.10", port: UInt16 = 80) -> ConnectionAttributes {
            ConnectionAttributes(
                source: sa.map { PeerIdentity(trustDomain: "cluster.local", namespace: "client", serviceAccount: $0) },
                sourceIP: Self.ip(source), destinationIP: Self.ip("10.88.0.20"), destinationPort: port
            )
        }
        #expect(store.authorize(connection("curl-allow"), to: httpbin).decision == .allow)
        let denied = store.authorize(connection("curl-deny"), to: httpbin)
        #expect(denied.decision == .notAllowed)
        #expect(denied.dryRunMatches == ["apps/audit-suffix"], "the dry-run DENY is reported, not enforced")
        #expect(store.authorize(connection("curl-allow", port: 8080), to: httpbin).decision == .notAllowed, "clauses AND: the port must match too")
        #expect(store.authorize(connection(nil), to: httpbin).decision == .explicitlyDenied(policy: "istio-system/strict-mtls"))
        #expect(store.authorize(connection(nil, from: "192.168.1.5"), to: tcpEcho).decision == .allow, "outside the DENY's source block, no ALLOW applies")
        #expect(store.authorize(connection(nil), to: tcpEcho).decision == .explicitlyDenied(policy: "istio-system/strict-mtls"))
        #expect(store.authorize(connection("anyone"), to: tcpEcho).decision == .allow)
    }

    @Test("match semantics: string matches, service accounts, CIDRs, not-lists, empty rules and matches")
    func matchSemantics() {
        let source = PeerIdentity(trustDomain: "cluster.local", namespace: "ns1", serviceAccount: "sa1")
        let connection = ConnectionAttributes(source: source, sourceIP: IPAddress("10.1.2.3"), destinationIP: IPAddress("fd00::1"), destinationPort: 443)
        var workload = Workload(namespace: "ns1")
        workload.uid = "w"
        func policy(_ rules: [[[Authorization.Match]]], action: Authorization.Action = .allow) -> [Authorization] {
            [Authorization(name: "p", namespace: "ns1", scope: .namespace, action: action, rules: rules)]
        }
        func match(_ build: (inout Authorization.Match) -> Void) -> Authorization.Match {
            var m = Authorization.Match()
            build(&m)
            return m
        }
        #expect(policy([]).evaluate(connection, for: workload).decision == .notAllowed, "no rules match nothing")
        #expect(policy([[]]).evaluate(connection, for: workload).decision == .allow, "a rule without clauses matches everything")
        #expect(policy([[[Authorization.Match()]]]).evaluate(connection, for: workload).decision == .notAllowed, "an empty match never matches")
        #expect(policy([[[match { $0.principals = [.prefix("cluster.local/ns/ns1/")] }]]]).evaluate(connection, for: workload).decision == .allow)
        #expect(policy([[[match { $0.namespaces = [.exact("ns2")] }]]]).evaluate(connection, for: workload).decision == .notAllowed)
        #expect(policy([[[match { $0.serviceAccounts = [.init(namespace: "ns1", serviceAccount: "sa1")] }]]]).evaluate(connection, for: workload).decision == .allow)
        #expect(policy([[[match { $0.sourceIPs = [IPNetwork("10.1.0.0/16")!]; $0.notDestinationIPs = [IPNetwork("fd00::/64")!] }]]]).evaluate(connection, for: workload).decision == .notAllowed)
        #expect(policy([[[match { $0.destinationIPs = [IPNetwork("fd00::/64")!]; $0.destinationPorts = [80, 443] }]]]).evaluate(connection, for: workload).decision == .allow)
        #expect(policy([[[match { $0.notPrincipals = [.presence] }]]], action: .deny).evaluate(connection, for: workload).decision == .allow)
        let other = [Authorization(name: "x", namespace: "ns2", scope: .namespace, action: .allow, rules: [])]
        #expect(other.evaluate(connection, for: workload).decision == .allow, "another namespace's ALLOW does not apply")
        let selected = [Authorization(name: "x", namespace: "ns1", scope: .workloadSelector, action: .allow, rules: [])]
        #expect(selected.evaluate(connection, for: workload).decision == .allow, "a selector policy applies only when referenced")
        workload.authorizationPolicies = ["ns1/x"]
        #expect(selected.evaluate(connection, for: workload).decision == .notAllowed)
        #expect(IPNetwork("10.0.0.0/33") == nil && IPNetwork("10.0.0.1") != nil && IPNetwork("::/0")!.contains(IPAddress("fd00::9")!))
        #expect(!IPNetwork("0.0.0.0/0")!.contains(IPAddress("::1")!), "families never mix")
    }

    @Test("fuzz: mutated configs never crash the parser; every failure carries a message", arguments: [UInt64(61), 62])
    func fuzz(seed: UInt64) throws {
        let valid = Array(try Self.fixture("onebox.yaml").utf8)
        var random = SeededGenerator(seed: seed)
        var parsed = 0
        var refused = 0
        for _ in 0..<400 {
            do {
                _ = MeshStore(try LocalConfig.parse(String(decoding: random.mutate(valid), as: UTF8.self)))
                parsed += 1
            } catch {
                refused += 1
                #expect(!error.message.isEmpty)
            }
        }
        #expect(refused > 0, "mutations break the file often enough to reach the error paths")
    }
}
