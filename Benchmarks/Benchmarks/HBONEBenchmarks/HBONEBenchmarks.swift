import InternetAddress
import Benchmark
import Foundation
import HBONE
import MeshIdentity
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The HBONE data path in one process: our client → mTLS 1.3 + HTTP/2 CONNECT → our
/// server → a plain TCP sink, on loopback. Malloc counts cover both ends of the tunnel;
/// they are the regression signal on a noisy machine (thresholds in `Thresholds/`).
let benchmarks: @Sendable () -> Void = {
    // Malloc counts are nearly stable run to run; wall clock on a shared 2-core VM is not.
    // `swift package benchmark thresholds check` compares p90 mallocs with the committed
    // Thresholds/*.json and fails beyond 5 %.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        maxDuration: .seconds(3),
        thresholds: [.mallocCountTotal: BenchmarkThresholds(relative: [.p90: 5.0])]
    )
    // One mesh per benchmark, started in setup: the closure runs once per sample, and a
    // sample must measure a tunnel, not a CA and a server coming up.
    let setup: Benchmark.BenchmarkSetupHook = { try await shared.start() }
    let teardown: Benchmark.BenchmarkTeardownHook = { shared.stop() }

    // The bulk tunnel's count depends on how the 1 MiB is cut into reads, which is timing:
    // reads start at 4 KiB and grow, so clean-clone runs of the same code gave 549 and 583.
    // It gets 10 %; the open/close and handshake counts stay within 1 % and keep 5 %.
    var bulk = Benchmark.defaultConfiguration
    bulk.thresholds = [.mallocCountTotal: BenchmarkThresholds(relative: [.p90: 10.0])]
    Benchmark("Tunnel 1 MiB on a pooled connection", configuration: bulk, closure: { benchmark in
        let mesh = shared.mesh
        let chunk = [UInt8](repeating: 0x5A, count: 64 << 10)
        for _ in benchmark.scaledIterations {
            let tunnel = try await mesh.client.connect(mesh.target)
            try await tunnel.executeThenClose { inbound, outbound in
                for _ in 0..<16 { try await outbound.write(chunk) }
                outbound.finish()
                for try await _ in inbound {}
            }
        }
    }, setup: setup, teardown: teardown)

    Benchmark("Stream open and close on a pooled connection", closure: { benchmark in
        for _ in benchmark.scaledIterations {
            try await shared.mesh.emptyTunnel()
        }
    }, setup: setup, teardown: teardown)

    Benchmark("New tunnel with a full mTLS handshake", closure: { benchmark in
        for _ in benchmark.scaledIterations {
            try await shared.mesh.emptyTunnel()
            await shared.mesh.client.closeAllConnections()
        }
    }, setup: setup, teardown: teardown)
}

/// The mesh of the running benchmark.
let shared = SharedMesh()

final class SharedMesh: Sendable {
    private let current = Mutex<BenchMesh?>(nil)

    var mesh: BenchMesh { self.current.withLock { $0! } }

    func start() async throws {
        let mesh = try await BenchMesh.start()
        self.current.withLock { $0 = mesh }
    }

    func stop() {
        self.current.withLock { mesh in
            mesh?.stop()
            mesh = nil
        }
    }
}

/// CA, certificate manager, HBONE server and client, and a sink that reads to EOF and
/// closes, all started for one benchmark.
struct BenchMesh: Sendable {
    let client: HBONEClient
    let target: HBONETunnelTarget
    let tasks: Task<Void, any Error>
    let sink: Int32

    static func start() async throws -> BenchMesh {
        let ca = try CertificateAuthority.selfSigned()
        let manager = CertificateManager(provider: EmbeddedCAProvider(authority: ca))
        let (sink, sinkPort) = try Self.startSink()
        var configuration = HBONEServer.Configuration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let serverID = try SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/httpbin")
        let server = HBONEServer(configuration: configuration, identity: serverID, certificates: manager) { _ in
            .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: sinkPort))
        }
        let tasks = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await manager.run() }
                group.addTask { try await server.run() }
                try await group.waitForAll()
            }
        }
        let port = try await server.listeningAddress.port
        let target = HBONETunnelTarget(
            source: try SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/sleep"),
            nextHop: HBONEAddress(ip: .v4(127, 0, 0, 1), port: port),
            expectedIdentities: [serverID], authority: HBONEAddress(ip: .v4(127, 0, 0, 1), port: sinkPort)
        )
        return BenchMesh(client: HBONEClient(certificates: manager), target: target, tasks: tasks, sink: sink)
    }

    /// Opens a tunnel, ends it at once in both directions and waits for the close.
    func emptyTunnel() async throws {
        let tunnel = try await self.client.connect(self.target)
        try await tunnel.executeThenClose { inbound, outbound in
            outbound.finish()
            for try await _ in inbound {}
        }
    }

    func stop() {
        self.tasks.cancel()
        shutdown(self.sink, Int32(SHUT_RDWR))
        close(self.sink)
    }

    /// A blocking sink on its own thread: each connection is read to EOF, then closed.
    static func startSink() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = listen(fd, 128)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        Thread {
            while true {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { return }
                Thread {
                    var buffer = [UInt8](repeating: 0, count: 256 << 10)
                    while buffer.withUnsafeMutableBytes({ recv(client, $0.baseAddress, $0.count, 0) }) > 0 {}
                    close(client)
                }.start()
            }
        }.start()
        return (fd, UInt16(bigEndian: address.sin_port))
    }
}
