import Benchmark
import Foundation
import MeshIdentity

/// Identity work on the connection path: parsing peer identities (every connection),
/// creating CSRs (every new identity and rotation) and signing them (the embedded CA).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        maxDuration: .seconds(3)
    )

    Benchmark("SPIFFE parse", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let input = "spiffe://cluster.local/ns/default/sa/productpage-viewer"
        for _ in benchmark.scaledIterations {
            blackHole(try SPIFFEID(parsing: input))
        }
    }

    Benchmark("SPIFFE principal format", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let id = try SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/productpage-viewer")
        for _ in benchmark.scaledIterations {
            blackHole(id.principal)
        }
    }

    Benchmark("CSR creation (P-256 key + signed request)") { benchmark in
        let id = try SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/sleep")
        for _ in benchmark.scaledIterations {
            blackHole(try IdentityCSR(identity: id))
        }
    }

    Benchmark("CA signing (verify CSR + issue leaf)") { benchmark in
        let ca = try CertificateAuthority.selfSigned()
        let csr = try IdentityCSR(identity: SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/sleep"))
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try ca.sign(csr.request, for: csr.identity))
        }
    }

    Benchmark("Peer chain verification (trust bundle)") { benchmark in
        let ca = try CertificateAuthority.selfSigned()
        let csr = try IdentityCSR(identity: SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/sleep"))
        let chain = try ca.sign(csr.request, for: csr.identity)
        let bundle = ca.trustBundle
        let now = Date()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try await bundle.verify(chain: chain, usage: .client, trustDomain: .clusterLocal, at: now))
        }
    }
}
