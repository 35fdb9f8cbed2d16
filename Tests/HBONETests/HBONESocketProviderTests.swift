import Foundation
@testable import HBONE
import NIOPosix
import InternetAddress
import MeshIdentity
import MeshTestSupport
import Synchronization
import Testing

/// HBONE with sockets made elsewhere (what the in-pod proxy does inside each pod's netns):
/// a pre-bound listening socket for the server, and providers for the client's next-hop
/// connection and the server's upstream connection.
@Suite("HBONE socket providers")
struct HBONESocketProviderTests {
    /// A blocking TCP connect from this namespace, returning the descriptor.
    static func connectDescriptor(_ address: HBONEAddress) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = address.port.bigEndian
        withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: address.ip.bytes) }
        let result = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard result == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
        return fd
    }

    @Test("a pre-bound listener, a next-hop provider and an upstream provider carry a tunnel; each is used once per connection")
    func providers() async throws {
        let echo = try await EchoUntilEOFServer()
        let ca = try CertificateAuthority.selfSigned()
        let manager = CertificateManager(provider: EmbeddedCAProvider(authority: ca))

        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        #expect(withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0)
        #expect(listen(listener, 16) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = UInt16(bigEndian: sin.sin_port)

        let upstreamCalls = Mutex<[(HBONEAddress, IPAddress?)]>([])
        let nextHopCalls = Mutex<[HBONEAddress]>([])
        var configuration = HBONEServer.Configuration()
        configuration.listeningSocket = listener
        configuration.upstreamSockets = HBONESocketProvider { destination, source in
            upstreamCalls.withLock { $0.append((destination, source)) }
            return try await offload { try Self.connectDescriptor(destination) }
        }
        let server = HBONEServer(configuration: configuration, identity: spiffe("default", "httpbin"), certificates: manager) { _ in
            .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: UInt16(echo.port)))
        }
        let client = HBONEClient(certificates: manager, sockets: HBONESocketProvider { destination, _ in
            nextHopCalls.withLock { $0.append(destination) }
            return try await offload { try Self.connectDescriptor(destination) }
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
            #expect(nextHopCalls.withLock { $0 } == [HBONEAddress(ip: .v4(127, 0, 0, 1), port: port)], "one pooled connection for two tunnels")
            let calls = upstreamCalls.withLock { $0 }
            #expect(calls.count == 2, "one upstream connection per tunnel")
            #expect(calls.allSatisfy { $0.0.port == UInt16(echo.port) && $0.1 == .v4(127, 0, 0, 1) }, "the source offered is the client's address")
        }
        await echo.close()
    }
}
