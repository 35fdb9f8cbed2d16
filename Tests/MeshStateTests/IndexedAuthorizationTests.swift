import InternetAddress
import MeshState
import MeshTestSupport
import Testing

/// `MeshStore.authorize` looks only at the policies indexed for the workload (Global, its
/// namespace's, the ones it selects). It must decide exactly as evaluating every policy in
/// config order does — checked on random configs, workloads and connections.
@Suite("Indexed authorization agrees with the full scan")
struct IndexedAuthorizationTests {
    @Test("Random policies, workloads and connections: same decision and dry-run matches", arguments: 0..<8)
    func agreesWithFullScan(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let namespaces = ["a", "b", "c"]
        let accounts = ["x", "y", "z"]
        func pick<T>(_ values: [T]) -> T { values[Int.random(in: 0..<values.count, using: &random)] }
        var policies: [Authorization] = []
        for index in 0..<Int.random(in: 0..<25, using: &random) {
            let scope = pick([Authorization.Scope.global, .namespace, .workloadSelector])
            var match = Authorization.Match()
            switch Int.random(in: 0..<4, using: &random) {
            case 0: match.principals = [.exact("cluster.local/ns/\(pick(namespaces))/sa/\(pick(accounts))")]
            case 1: match.namespaces = [.exact(pick(namespaces))]
            case 2: match.destinationPorts = [pick([80, 8080])]
            default: match.notPrincipals = [.suffix("/sa/\(pick(accounts))")]
            }
            policies.append(Authorization(
                // Names repeat now and then, so two policies can share a key.
                name: "p\(index % 17)", namespace: pick(namespaces), scope: scope, action: pick([.allow, .deny]),
                dryRun: Int.random(in: 0..<6, using: &random) == 0, rules: [[[match]]]
            ))
        }
        let keys = policies.map(\.key) + ["a/missing"]
        var workloads: [Workload] = []
        for index in 0..<6 {
            var workload = Workload(namespace: pick(namespaces))
            workload.uid = "w\(index)"
            workload.name = "w\(index)"
            workload.serviceAccount = pick(accounts)
            workload.workloadIPs = [.v4(10, 0, 0, UInt8(index + 1))]
            workload.authorizationPolicies = (0..<Int.random(in: 0..<4, using: &random)).map { _ in pick(keys) }
            workloads.append(workload)
        }
        let config = LocalConfig(workloads: workloads, policies: policies)
        let store = MeshStore(config)
        var compared = 0
        for workload in workloads {
            for _ in 0..<20 {
                let source: PeerIdentity? = Int.random(in: 0..<5, using: &random) == 0
                    ? nil : PeerIdentity(trustDomain: "cluster.local", namespace: pick(namespaces), serviceAccount: pick(accounts))
                let connection = ConnectionAttributes(
                    source: source, sourceIP: .v4(10, 1, 0, 1), destinationIP: workload.workloadIPs[0], destinationPort: pick([80, 8080, 9090])
                )
                let indexed = store.authorize(connection, to: workload)
                let scanned = config.policies.evaluate(connection, for: workload)
                #expect(indexed.decision == scanned.decision, "seed \(seed), \(workload.uid), \(connection)")
                #expect(indexed.dryRunMatches == scanned.dryRunMatches, "seed \(seed), \(workload.uid), \(connection)")
                compared += 1
            }
        }
        #expect(compared == 120)
    }
}
