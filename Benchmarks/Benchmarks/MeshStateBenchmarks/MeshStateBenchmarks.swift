import Benchmark
import Foundation
import InternetAddress
import MeshState

/// The control side at scale (issue 8): a ztunnel local config with 1 000 workloads,
/// 500 services and 10 000 authorization rules — how long it takes to load (parse +
/// index) and how long one connection's L4 authorization takes against it.
let benchmarks: @Sendable () -> Void = {
    // Malloc counts are the regression signal CI checks (`benchmark thresholds check`,
    // p90 within 5 % of Benchmarks/Thresholds); time is reported, not checked.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident],
        maxDuration: .seconds(5),
        thresholds: [.mallocCountTotal: BenchmarkThresholds(relative: [.p90: 5.0])]
    )

    let text = ScaleConfig.yaml(workloads: 1_000, services: 500, policies: 1_000, rulesPerPolicy: 10)

    Benchmark("Load 1000 workloads, 500 services, 10000 rules", configuration: .init(maxIterations: 20)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(MeshStore(try LocalConfig.parse(text)))
        }
    }

    Benchmark("Authorize a connection (10000 rules loaded)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let store = MeshStore(try LocalConfig.parse(text))
        // The destination is selected by its own policy (10 rules) plus the namespace and
        // global ones; the source matches the last rule, so every rule is evaluated.
        let destination = store.workload(at: ScaleConfig.address(of: 517))!
        let allowed = ConnectionAttributes(
            source: PeerIdentity(trustDomain: "cluster.local", namespace: "ns-9", serviceAccount: "sa-9"),
            sourceIP: ScaleConfig.address(of: 9), destinationIP: ScaleConfig.address(of: 517), destinationPort: 8080
        )
        precondition(store.authorize(allowed, to: destination).decision.isAllowed, "the generated config must allow this connection")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(store.authorize(allowed, to: destination))
        }
    }
}

/// Generates the scale config as YAML text, in ztunnel's local config schema.
enum ScaleConfig {
    static let namespaces = 50

    static func address(of workload: Int) -> IPAddress { .v4(10, 100, UInt8(workload / 250), UInt8(workload % 250 + 1)) }

    static func yaml(workloads: Int, services: Int, policies: Int, rulesPerPolicy: Int) -> String {
        var out = "workloads:\n"
        for i in 0..<workloads {
            let namespace = "ns-\(i % namespaces)"
            let service = i % services
            out += """
            - uid: cluster1//v1/Pod/\(namespace)/w-\(i)
              name: w-\(i)
              namespace: \(namespace)
              serviceAccount: sa-\(i % 100)
              trustDomain: cluster.local
              workloadIps: ["\(address(of: i))"]
              protocol: HBONE
              node: node-\(i % 10)
              authorizationPolicies: ["\(namespace)/pol-\(i % policies)"]
              services:
                "svc-ns-\(service % namespaces)/svc-\(service).svc-ns-\(service % namespaces).svc.cluster.local":
                  80: 8080

            """
        }
        out += "policies:\n"
        for p in 0..<policies {
            // Policy p is attached to workload p (same index), in that workload's namespace.
            out += "- name: pol-\(p)\n  namespace: ns-\(p % namespaces)\n  scope: WorkloadSelector\n  action: Allow\n  rules:\n"
            for r in 0..<rulesPerPolicy {
                let source = (p + r * 7) % 100
                let principal = r == rulesPerPolicy - 1 ? "cluster.local/ns/ns-9/sa/sa-9" : "cluster.local/ns/ns-\(source % namespaces)/sa/sa-x\(source)"
                out += "  - - - principals: [!Exact \"\(principal)\"]\n    - - destinationPorts: [8080]\n"
            }
        }
        out += "- name: deny-legacy\n  namespace: istio-system\n  scope: Global\n  action: Deny\n  rules:\n  - - - namespaces: [!Exact \"legacy\"]\n"
        out += "services:\n"
        for s in 0..<services {
            let namespace = "svc-ns-\(s % namespaces)"
            out += "- name: svc-\(s)\n  namespace: \(namespace)\n  hostname: svc-\(s).\(namespace).svc.cluster.local\n"
            out += "  vips: [\"/10.96.\(s / 250).\(s % 250 + 1)\"]\n  ports: {80: 8080}\n"
        }
        return out
    }
}
