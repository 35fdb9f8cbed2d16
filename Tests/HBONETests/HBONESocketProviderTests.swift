import Foundation
@testable import HBONE
import NIOPosix
import InternetAddress
import MeshIdentity
import MeshTestSupport
import Redirect
import Synchronization
import Testing

/// HBONE with sockets made elsewhere (what the in-pod proxy does inside each pod's netns):
/// a pre-bound listening socket for the server, and providers for the client's next-hop
/// connection and the server's upstream connection.
@Suite("HBONE socket providers")
struct HBONESocketProviderTests {
    @Test("a pre-bound listener, a next-hop provider and an upstream provider carry a tunnel; each is used once per connection")
    func providers() async throws {
        let echo = try await EchoUntilEOFServer()
        let ca = try CertificateAuthority.selfSigned()
        let manager = CertificateManager(provider: EmbeddedCAProvider(authority: ca))

        let (listener, listenerPort) = try BlockingSocket.loopbackListener()
        let port = UInt16(listenerPort)

        let upstreamCalls = Mutex(0)
        let nextHopCalls = Mutex(0)
        var configuration = HBONEServer.Configuration()
        configuration.listeningSocket = listener
        // Binding the client's address needs IP_TRANSPARENT, which needs CAP_NET_ADMIN.
        configuration.upstreamSockets = HBONESocketProvider(bindsSource: Capability.isRoot) { createSocket in
            upstreamCalls.withLock { $0 += 1 }
            createSocket()
        }
        let server = HBONEServer(configuration: configuration, identity: spiffe("default", "httpbin"), certificates: manager) { _ in
            .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: UInt16(echo.port)))
        }
        let client = HBONEClient(certificates: manager, sockets: HBONESocketProvider { createSocket in
            nextHopCalls.withLock { $0 += 1 }
            createSocket()
        })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await manager.run() }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            #expect(try await server.listeningAddress.port == port, "the server serves the socket it was given")
            // One event loop: the pool is per loop (a tunnel's connection shares its socket's loop).
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            for round in 0..<2 {
                let tunnel = try await client.connect(HBONETunnelTarget(
                    source: spiffe("default", "sleep"), nextHop: HBONEAddress(ip: .v4(127, 0, 0, 1), port: port),
                    expectedIdentities: [spiffe("default", "httpbin")], authority: HBONEAddress(ip: .v4(10, 0, 0, 9), port: 80)
                ), on: loop)
                let answer = try await tunnel.executeThenClose { inbound, outbound in
                    try await outbound.write(Array("round \(round)".utf8))
                    outbound.finish()
                    var received: [UInt8] = []
                    for try await chunk in inbound { received += chunk }
                    return String(decoding: received, as: UTF8.self)
                }
                #expect(answer == "echo:round \(round)")
            }
            #expect(nextHopCalls.withLock { $0 } == 1, "one pooled connection for two tunnels")
            #expect(upstreamCalls.withLock { $0 } == 2, "one upstream connection per tunnel")
            // The echo saw each upstream connection come from the client's address (bound
            // with IP_TRANSPARENT and port 0): 127.0.0.1 here.
            #expect(echo.peers.allSatisfy { $0.hasPrefix("127.0.0.1:") } && echo.peers.count == 2, "\(echo.peers)")
        }
        await echo.close()
    }
}

/// The provider as ztunnel's in-pod mode uses it, against a real pod namespace.
@Suite("HBONE socket provider in a pod namespace", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"))
struct HBONEPodSocketTests {
    /// The network namespaces of this process's SwiftNIO event-loop threads (named
    /// `NIO-SGLTN-…` or `NIO-ELT-…`). Other threads may be in pods legitimately: tests
    /// running in parallel use `NetworkNamespace.run`'s dedicated threads.
    static func eventLoopNamespaces() -> Set<String> {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return Set(tasks.compactMap { task -> String? in
            guard let name = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8), name.hasPrefix("NIO-") else {
                return nil
            }
            return try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/task/\(task)/ns/net")
        })
    }

    @Test("upstream sockets are created inside the pod and bound to the client's address: its loopback-only app is reached and sees the client, and every event-loop thread is back in the host namespace")
    func upstreamInsidePod() async throws {
        let network = try await PodNetwork(tag: "hsp")
        let pod = try NetworkNamespace(path: network.podPath)
        let hostNamespace = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        // The app listens on the pod's 127.0.0.1 only: unreachable from any other namespace.
        let listener = try await PodSockets.listen(on: SocketEndpoint(host: "127.0.0.1", port: 0)!, in: pod)
        let appPort = try #require(listener.localEndpoint?.port)
        let app = try await EchoUntilEOFServer(boundSocket: listener.takeDescriptor())
        await #expect(throws: (any Error).self, "the app is not reachable from the host namespace") {
            _ = try await PodSockets.connect(to: SocketEndpoint(host: "127.0.0.1", port: appPort)!, in: NetworkNamespace.host())
        }

        let ca = try CertificateAuthority.selfSigned()
        let manager = CertificateManager(provider: EmbeddedCAProvider(authority: ca))
        let entries = Mutex(0)
        var configuration = HBONEServer.Configuration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.upstreamSockets = HBONESocketProvider(mark: 0x539, bindsSource: true) { createSocket in
            entries.withLock { $0 += 1 }
            try pod.enterBriefly(createSocket)
        }
        let server = HBONEServer(configuration: configuration, identity: spiffe("default", "httpbin"), certificates: manager) { _ in
            .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: appPort))
        }
        // The client binds 127.0.0.5 (a source provider in this namespace), so the server's
        // peer is 127.0.0.5 and the app in the pod must see that address: the upstream socket
        // is bound to the client's address, not the pod's default source 127.0.0.1.
        let client = HBONEClient(certificates: manager, sockets: HBONESocketProvider(bindsSource: true) { createSocket in createSocket() })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await manager.run() }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            let port = try await server.listeningAddress.port
            for round in 0..<3 {
                let tunnel = try await client.connect(HBONETunnelTarget(
                    source: spiffe("default", "sleep"), nextHop: HBONEAddress(ip: .v4(127, 0, 0, 1), port: port),
                    expectedIdentities: [spiffe("default", "httpbin")], authority: HBONEAddress(ip: .v4(10, 0, 0, 9), port: 80),
                    sourceIP: .v4(127, 0, 0, 5)
                ))
                let answer = try await tunnel.executeThenClose { inbound, outbound in
                    try await outbound.write(Array("pod \(round)".utf8))
                    outbound.finish()
                    var received: [UInt8] = []
                    for try await chunk in inbound { received += chunk }
                    return String(decoding: received, as: UTF8.self)
                }
                #expect(answer == "echo:pod \(round)")
            }
            #expect(entries.withLock { $0 } == 3, "the namespace was entered once per upstream socket")
            #expect(app.peers.count == 3 && app.peers.allSatisfy { $0.hasPrefix("127.0.0.5:") }, "the app sees the client's address: \(app.peers)")
            let loops = Self.eventLoopNamespaces()
            #expect(loops == [hostNamespace], "no event-loop thread was left in the pod")
        }
        await app.close()
    }
}
