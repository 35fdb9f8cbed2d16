import InternetAddress
import Crypto
import Foundation
import Synchronization
@testable import HBONE
import MeshIdentity
import MeshTestSupport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

/// Tunnels end to end through the async API and the forwarder: many streams, half-close in
/// the server-first direction, a 1 GiB transfer, a peer that goes silent, rotation.
@Suite("HBONE tunnels", .serialized)
struct HBONETunnelTests {
    @Test("100 concurrent streams share one connection, each echoing its own bytes (async API)")
    func hundredStreams() async throws {
        let echo = try await EchoUntilEOFServer()
        let mesh = try TestMesh(upstreamPort: echo.port)
        try await mesh.run { port in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let target = mesh.target(port: port)
            let answers = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<100 {
                    group.addTask {
                        let tunnel = try await mesh.client.connect(target, on: loop)
                        return try await tunnel.executeThenClose { inbound, outbound in
                            try await outbound.write(Array("stream \(index)".utf8))
                            outbound.finish()
                            var received: [UInt8] = []
                            for try await chunk in inbound { received += chunk }
                            return (index, String(decoding: received, as: UTF8.self))
                        }
                    }
                }
                var answers: [Int: String] = [:]
                for try await (index, answer) in group { answers[index] = answer }
                return answers
            }
            #expect(answers.count == 100)
            #expect((0..<100).allSatisfy { answers[$0] == "echo:stream \($0)" })
            #expect(mesh.client.connectionsStarted == 1, "100 streams fit the client's 100-per-connection limit")
            #expect(mesh.server.openConnections == 1)
        }
        await echo.close()
    }

    @Test("IPv6: HBONE to [::1], bracketed authority, the server sees v6 addresses")
    func ipv6() async throws {
        try #require(Capability.hasIPv6Loopback, "no IPv6 loopback on this machine")
        let echo = try await EchoUntilEOFServer()
        let ca = try CertificateAuthority.selfSigned()
        let manager = CertificateManager(provider: EmbeddedCAProvider(authority: ca))
        var configuration = HBONEServer.Configuration()
        configuration.host = "::1"
        configuration.port = 0
        let seen = Mutex<HBONEInboundRequest?>(nil)
        let server = HBONEServer(configuration: configuration, identity: spiffe("default", "httpbin"), certificates: manager) { request in
            seen.withLock { $0 = request }
            // The authority names an IPv6 destination; the test's echo service listens on v4.
            return .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: UInt16(echo.port)))
        }
        let client = HBONEClient(certificates: manager)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await manager.run() }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            let bound = try await server.listeningAddress
            #expect(bound.ip.isIPv6)
            let loopback = try #require(IPAddress("::1"))
            let tunnel = try await client.connect(
                to: HBONEAddress(ip: loopback, port: bound.port), authority: try #require(HBONEAddress(authority: "[fd00::7]:8080")),
                expecting: [spiffe("default", "httpbin")], as: spiffe("default", "sleep")
            )
            let answer = try await tunnel.executeThenClose { inbound, outbound in
                try await outbound.write(Array("over v6".utf8))
                outbound.finish()
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk }
                return String(decoding: received, as: UTF8.self)
            }
            #expect(answer == "echo:over v6")
            let request = try #require(seen.withLock { $0 })
            #expect(request.target.description == "[fd00::7]:8080")
            #expect(request.peerAddress?.ip == loopback)
        }
        await echo.close()
    }

    @Test("half-close server-first: the upstream greets and sends FIN, the client still sends afterwards")
    func serverFirstHalfClose() async throws {
        let late = Recorded()
        let upstream = try BlockingTCPServer { socket in
            socket.send(Array("220 greeting".utf8))
            socket.shutdownWrite()
            late.set(socket.receiveAll())
        }
        defer { upstream.stop() }
        let mesh = try TestMesh(upstreamPort: upstream.port)
        try await mesh.run { port in
            let tunnel = try await mesh.client.connect(mesh.target(port: port), on: MultiThreadedEventLoopGroup.singleton.next())
            let greeting = try await tunnel.executeThenClose { inbound, outbound in
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk; }  // ends at the server's END_STREAM
                try await outbound.write(Array("QUIT after EOF".utf8))
                outbound.finish()
                return String(decoding: received, as: UTF8.self)
            }
            #expect(greeting == "220 greeting", "the greeting may arrive together with the 200")
            try await eventually("upstream got the late bytes") { late.value == Array("QUIT after EOF".utf8) }
        }
    }

    @Test("1 GiB through forwarder and server: SHA-256 of what was sent equals what arrived")
    func oneGibibyte() async throws {
        let digest = Recorded()
        let sink = try BlockingTCPServer { socket in
            var hasher = SHA256()
            var count = 0
            while true {
                let chunk = socket.receive()
                if chunk.isEmpty { break }
                hasher.update(data: chunk)
                count += chunk.count
            }
            let answer = Array(hasher.finalize()) + withUnsafeBytes(of: UInt64(count).bigEndian, Array.init)
            digest.set(answer)
            socket.send(answer)
            socket.shutdownWrite()
        }
        defer { sink.stop() }
        let mesh = try TestMesh(upstreamPort: sink.port)
        try await mesh.run { port in
            try await mesh.withForwarder(serverPort: port) { local in
                let total = 1 << 30
                let (sent, answer) = try await offload { () throws -> ([UInt8], [UInt8]) in
                    let socket = try BlockingSocket.connect(port: local)
                    var generator = SeededGenerator(seed: 0x4842_4F4E_45)
                    var hasher = SHA256()
                    // Random bytes, made distinct per MiB by stamping the chunk number first.
                    var chunk = generator.bytes(1 << 20)
                    for number in 0..<(total / chunk.count) {
                        withUnsafeBytes(of: UInt64(number).bigEndian) { chunk.replaceSubrange(0..<8, with: $0) }
                        hasher.update(data: chunk)
                        guard socket.send(chunk) else { break }
                    }
                    socket.shutdownWrite()
                    return (Array(hasher.finalize()), socket.receiveAll())
                }
                #expect(answer.count == 40, "the sink answers its digest and byte count")
                #expect(Array(answer.prefix(32)) == sent, "SHA-256 at the far end equals SHA-256 of what was sent")
                #expect(answer.suffix(8).reduce(0) { $0 << 8 | Int($1) } == total)
            }
        }
    }

    @Test("a peer that stops answering is declared dead by keepalive, and its tunnels end")
    func keepaliveTimeout() async throws {
        let echo = try await EchoUntilEOFServer()
        var configuration = HBONEConfiguration()
        configuration.keepalive.interval = .milliseconds(200)
        configuration.keepalive.timeout = .milliseconds(600)
        let mesh = try TestMesh(upstreamPort: echo.port, configuration: configuration)
        try await mesh.run { port in
            let proxy = try FreezableProxy(upstreamPort: Int(port))
            defer { proxy.stop() }
            let target = mesh.target(port: UInt16(proxy.port))
            let tunnel = try await mesh.client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next())
            #expect(mesh.client.pooledConnections(to: target.nextHop) == 1)
            let started = ContinuousClock.now
            proxy.freeze()
            let ended: Bool = try await tunnel.executeThenClose { inbound, outbound in
                try await outbound.write(Array("into the void".utf8))
                do {
                    for try await _ in inbound {}
                } catch {}
                return true
            }
            let elapsed = ContinuousClock.now - started
            #expect(ended)
            #expect(elapsed < .seconds(5), "dead within interval + timeout, not at TCP's timeout: \(elapsed)")
            try await eventually("dead connection left the pool") { mesh.client.pooledConnections(to: target.nextHop) == 0 }
        }
        await echo.close()
    }

    @Test("graceful shutdown: GOAWAY takes the connection out of the client's pool, the open tunnel finishes")
    func gracefulDrain() async throws {
        let echo = try await EchoUntilEOFServer()
        let mesh = try TestMesh(upstreamPort: echo.port)
        let group = ServiceGroup(services: [mesh.manager, mesh.server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = try await mesh.server.listeningAddress.port
            let target = mesh.target(port: port)
            let tunnel = try await mesh.client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next())
            let answer = try await tunnel.executeThenClose { inbound, outbound in
                try await outbound.write(Array("before ".utf8))
                #expect(mesh.client.pooledConnections(to: target.nextHop) == 1)
                await group.triggerGracefulShutdown()
                try await eventually("GOAWAY'd connection left the pool") { mesh.client.pooledConnections(to: target.nextHop) == 0 }
                try await outbound.write(Array("during drain".utf8))
                outbound.finish()
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk }
                return String(decoding: received, as: UTF8.self)
            }
            #expect(answer == "echo:before during drain", "a stream open before GOAWAY runs to its end")
            // The manager shut down with the group too, so this fails on the certificate
            // before it could fail on the closed listener; either way nothing new opens.
            await #expect(throws: (any Error).self, "after shutdown new tunnels fail") {
                _ = try await mesh.client.connect(target)
            }
            try await tasks.waitForAll()
        }
        await echo.close()
    }

    /// A service group ends the process when its services return; a server whose `run()`
    /// returned when its listener closed let that happen in the middle of the drain.
    @Test("graceful shutdown: the server's run() returns once its connections have drained, not before and not at the deadline")
    func runWaitsForDrain() async throws {
        let echo = try await EchoUntilEOFServer()
        var configuration = HBONEConfiguration()
        configuration.drainDeadline = .seconds(20)
        let mesh = try TestMesh(upstreamPort: echo.port, configuration: configuration)
        let group = ServiceGroup(services: [mesh.manager, mesh.server], logger: Logger(label: "test"))
        let finished = Recorded()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                try await group.run()
                finished.set([1])
            }
            let port = try await mesh.server.listeningAddress.port
            let target = mesh.target(port: port)
            let tunnel = try await mesh.client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next())
            let answer = try await tunnel.executeThenClose { inbound, outbound in
                try await outbound.write(Array("drain ".utf8))
                await group.triggerGracefulShutdown()
                try await eventually("GOAWAY received") { mesh.client.pooledConnections(to: target.nextHop) == 0 }
                try await pause(.milliseconds(300))
                let returnedEarly = finished.value != nil
                #expect(!returnedEarly, "run() returned with a tunnel still open")
                #expect(mesh.server.openConnections == 1)
                try await outbound.write(Array("me".utf8))
                outbound.finish()
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk }
                return String(decoding: received, as: UTF8.self)
            }
            #expect(answer == "echo:drain me")
            let tunnelEnded = ContinuousClock.now
            try await tasks.waitForAll()
            // The second GOAWAY went out after a PING round trip; the connection closed
            // when its last stream ended, long before the 20 s deadline.
            #expect(ContinuousClock.now - tunnelEnded < .seconds(5), "drained when idle, not at the deadline")
            let returned = finished.value != nil
            #expect(returned)
            #expect(mesh.server.openConnections == 0, "run() returned after the last connection closed")
        }
        await echo.close()
    }

    @Test("graceful shutdown while a connection still waits for the server's certificate (CA slow or down): closed, no crash")
    func drainBeforeHandshake() async throws {
        let ca = try CertificateAuthority.selfSigned()
        let provider = TestProvider(authority: ca, clock: SystemIdentityClock())
        provider.gated = true
        let manager = CertificateManager(provider: provider)
        var configuration = HBONEServer.Configuration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let server = HBONEServer(configuration: configuration, identity: spiffe("default", "httpbin"), certificates: manager) { _ in
            .reject(.unauthorized, reason: "unused")
        }
        let group = ServiceGroup(services: [manager, server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = Int(try await server.listeningAddress.port)
            // A plain TCP peer: the server accepted it and is waiting for its own certificate,
            // so the connection has no TLS or HTTP/2 handlers yet.
            let peer = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
            try await eventually("the server's signing waits at the gate") { provider.heldCount == 1 }
            await group.triggerGracefulShutdown()
            // Before the fix the drain wrote a GOAWAY frame into that bare pipeline, and NIO
            // trapped on the frame reaching the socket. Now the connection is just closed.
            try await eventually("the half-set-up connection is closed") { !peer.isActive }
            provider.gated = false
            provider.release()
            try await tasks.waitForAll()
        }
    }

    @Test("a server certificate rotated mid-run: new connections get the new one, a live tunnel keeps working")
    func rotation() async throws {
        try #require(HBONEInteropTests.pythonH2Available, "python3 with the h2 package is required")
        let echo = try await EchoUntilEOFServer()
        var managerConfiguration = CertificateManager.Configuration()
        managerConfiguration.certificateLifetime = .seconds(4)
        let mesh = try TestMesh(upstreamPort: echo.port, manager: managerConfiguration, backdate: .seconds(1))
        let files = try TemporaryDirectory(prefix: "hbone-rotation")
        try files.write("root.pem", mesh.ca.trustBundle.pem)
        let csr = try IdentityCSR(identity: mesh.clientIdentity)
        let chain = try mesh.ca.sign(csr.request, for: mesh.clientIdentity, lifetime: .seconds(600))
        try files.write("client.pem", PEM.encode(Array(chain.dropLast())))
        try files.write("client.key", PEM.encode(csr.privateKey))
        func serial(_ port: UInt16) async throws -> String? {
            let arguments = [
                "python3", HBONEInteropTests.interopScript, "--port", "\(port)", "--ca", files.url.path + "/root.pem",
                "--cert", files.url.path + "/client.pem", "--key", files.url.path + "/client.key",
                "--authority", "127.0.0.1:8080", "--payload", "x",
            ]
            let result = try await ExternalTool.run(arguments)
            let json = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
            #expect(json?["received"] as? String == "echo:x", "\(result.combined)")
            return json?["server_serial"] as? String
        }
        try await mesh.run { port in
            let first = try await serial(port)
            let updates = await mesh.manager.updates(for: mesh.serverIdentity)
            let tunnel = try await mesh.client.connect(mesh.target(port: port), on: MultiThreadedEventLoopGroup.singleton.next())
            let answer = try await tunnel.executeThenClose { inbound, outbound in
                try await outbound.write(Array("before ".utf8))
                for await _ in updates { break }  // the server's certificate rotated (half-life: 2.5 s)
                let second = try await serial(port)
                #expect(first != nil && second != nil && first != second, "new connections see the new certificate")
                try await outbound.write(Array("after".utf8))
                outbound.finish()
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk }
                return String(decoding: received, as: UTF8.self)
            }
            #expect(answer == "echo:before after", "the tunnel opened before the rotation carried on")
        }
        await echo.close()
    }
}

/// A value one thread sets and another polls.
final class Recorded: Sendable {
    private let storage = Mutex<[UInt8]?>(nil)
    func set(_ value: [UInt8]) { self.storage.withLock { $0 = value } }
    var value: [UInt8]? { self.storage.withLock { $0 } }
}
