import Foundation
import Synchronization
@testable import HBONE
import InternetAddress
import MeshIdentity
import MeshTestSupport
import NIOCore
import NIOPosix
import NIOSSL
import Testing

/// Our client against our server (the pool and the splice need both ends running); the
/// server side is covered against independent clients in ``HBONEInteropTests``.
@Suite("HBONE client and pool", .serialized)
struct HBONEClientTests {
    func withMesh(_ body: (TestMesh, UInt16) async throws -> Void) async throws {
        let upstream = try await EchoUntilEOFServer()
        let mesh = try TestMesh(upstreamPort: upstream.port)
        try await mesh.run { port in try await body(mesh, port) }
        await upstream.close()
    }

    @Test("a forwarder carries plain TCP through the tunnel, FIN included, many times over one pooled connection")
    func forwarder() async throws {
        try await self.withMesh { mesh, port in
            try await mesh.withForwarder(serverPort: port) { local in
                let probe = try await offload { BlockingTCP.exchange(port: local, payload: Array("probe".utf8), timeoutSeconds: 10) }
                #expect(String(decoding: probe.received, as: UTF8.self) == "echo:probe", "errno \(probe.errorNumber)")
                let payload = Array((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
                let exchange = try await offload { BlockingTCP.exchange(port: local, payload: payload) }
                #expect(exchange.errorNumber == 0)
                #expect(exchange.received.count == payload.count + 5)
                #expect(exchange.received == Array("echo:".utf8) + payload, "payload differs")
                // 300 short tunnels in a row on one connection: more than the server's 200
                // concurrent streams and more than nio-http2's 200 resets per 30 s, so a
                // stream that is not closed in order (END_STREAM both ways) stalls this loop.
                for round in 0..<(probe.errorNumber == 0 ? 300 : 0) {
                    let small = try await offload { BlockingTCP.exchange(port: local, payload: Array("round \(round)".utf8), timeoutSeconds: 5) }
                    #expect(String(decoding: small.received, as: UTF8.self) == "echo:round \(round)")
                    if small.received.isEmpty { break }
                }
                let nextHop = mesh.target(port: port).nextHop
                try await eventually("every stream released") { mesh.client.openStreams(to: nextHop) == 0 }
                #expect(mesh.client.connectionsStarted <= System.coreCount, "pooled: one connection per event loop at most")
            }
        }
    }

    @Test("N concurrent opens to a new key make exactly one TLS connection")
    func singleFlight() async throws {
        try await self.withMesh { mesh, port in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let target = mesh.target(port: port)
            let streams = try await withThrowingTaskGroup(of: (any Channel).self) { group in
                for _ in 0..<20 {
                    group.addTask { try await mesh.client.openStream(target, on: loop).get().channel }
                }
                var streams: [any Channel] = []
                for try await stream in group { streams.append(stream) }
                return streams
            }
            #expect(streams.count == 20)
            #expect(mesh.client.connectionsStarted == 1)
            #expect(mesh.client.pooledConnections(to: target.nextHop) == 1)
            for stream in streams { try? await stream.close() }
            await mesh.client.closeAllConnections()
            #expect(mesh.client.pooledConnections(to: target.nextHop) == 0, "closed connections leave the pool at once")
            _ = try await mesh.client.openStream(target, on: loop).get()
            #expect(mesh.client.connectionsStarted == 2, "the next open connects again")
        }
    }

    @Test(
        "a connection leaves the pool as soon as its close begins: an open in the same turn, after keepalive declares it dead or TLS closes it, gets a new one",
        arguments: [true, false]
    )
    func closingConnectionIsNotHandedOut(byKeepalive: Bool) async throws {
        try await self.withMesh { mesh, port in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let target = mesh.target(port: port)
            let first = try await mesh.client.openStream(target, on: loop).get().channel
            let connection = try #require(first.parent)
            let second = try await loop.flatSubmit { () -> EventLoopFuture<HBONEClient.OpenedStream> in
                if byKeepalive {
                    // What keepalive does on a dead peer: a close from its place in the
                    // pipeline; TLS then waits for a close_notify that will not come.
                    let keepalive = try! connection.pipeline.syncOperations.context(handlerType: KeepaliveHandler.self)
                    keepalive.close(promise: nil)
                } else {
                    // A close made below our handlers, as NIOSSL makes on the peer's
                    // close_notify or an alert: the channel goes inactive in this turn, its
                    // close future completes on a later one.
                    let tls = try! connection.pipeline.syncOperations.context(handlerType: NIOSSLClientHandler.self)
                    tls.close(promise: nil)
                }
                return mesh.client.openStream(target, on: loop)
            }.get()
            #expect(second.channel.parent !== connection, "the new stream is on another connection")
            #expect(mesh.client.connectionsStarted == 2)
            try? await second.channel.close()
            try? await first.close()
        }
    }

    @Test("pooling off (one stream per connection, no idle time): every tunnel is a new mTLS connection, closed with its stream")
    func poolingOff() async throws {
        let upstream = try await EchoUntilEOFServer()
        var configuration = HBONEConfiguration()
        configuration.http2.clientMaximumStreamsPerConnection = 1
        configuration.poolIdleTimeout = .zero
        let mesh = try TestMesh(upstreamPort: upstream.port, configuration: configuration)
        try await mesh.run { port in
            try await mesh.withForwarder(serverPort: port) { local in
                for round in 0..<5 {
                    let exchange = try await offload { BlockingTCP.exchange(port: local, payload: Array("round \(round)".utf8), timeoutSeconds: 5) }
                    #expect(String(decoding: exchange.received, as: UTF8.self) == "echo:round \(round)")
                    let nextHop = mesh.target(port: port).nextHop
                    try await eventually("the connection closed with its stream") { mesh.client.pooledConnections(to: nextHop) == 0 }
                }
                #expect(mesh.client.connectionsStarted == 5, "one handshake per tunnel")
            }
        }
        await upstream.close()
    }

    @Test("the client refuses a server whose identity is not the expected one")
    func wrongServerIdentity() async throws {
        try await self.withMesh { mesh, port in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let target = mesh.target(port: port, expecting: [spiffe("default", "reviews")])
            await #expect {
                _ = try await mesh.client.openStream(target, on: loop).get()
            } throws: { error in
                guard case HBONEClientError.handshake(let detail) = error else { return false }
                return detail.contains("spiffe://cluster.local/ns/default/sa/httpbin")
            }
            #expect(mesh.client.pooledConnections(to: target.nextHop) == 0)
        }
    }

    @Test("250 rejections on one pooled connection (each ends with the server's RST_STREAM) leave it and its live tunnel up")
    func rejectionsKeepTheConnection() async throws {
        let upstream = try await EchoUntilEOFServer()
        let mesh = try TestMesh(upstreamPort: upstream.port)
        var configuration = HBONEServer.Configuration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let upstreamPort = UInt16(upstream.port)
        // Port 9 is denied; everything else goes to the echo upstream.
        let server = HBONEServer(configuration: configuration, identity: mesh.serverIdentity, certificates: mesh.manager) { request in
            request.target.port == 9
                ? .reject(.unauthorized, reason: "policy") : .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: upstreamPort))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await mesh.manager.run() }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            let port = try await server.listeningAddress.port
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let allowed = mesh.target(port: port)
            var denied = allowed
            denied.authority = HBONEAddress(ip: .v4(127, 0, 0, 1), port: 9)
            let held = try await mesh.client.connect(allowed, on: loop)
            // More than nio-http2's default limit of 200 inbound resets per 30 s.
            var refusals = 0
            for _ in 0..<250 {
                do {
                    _ = try await mesh.client.openStream(denied, on: loop).get()
                } catch {
                    if (error as? HBONEClientError) == .status(401) { refusals += 1 } else { Issue.record("\(error)") }
                }
            }
            #expect(refusals == 250)
            #expect(mesh.client.connectionsStarted == 1, "one pooled connection throughout")
            let answer = try await held.executeThenClose { inbound, outbound in
                try await outbound.write(Array("held".utf8))
                outbound.finish()
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk }
                return String(decoding: received, as: UTF8.self)
            }
            #expect(answer == "echo:held", "the live tunnel outlived the rejections")
        }
        await upstream.close()
    }

    @Test("a non-200 answer fails the tunnel with the status")
    func statusPropagates() async throws {
        let upstream = try await EchoUntilEOFServer()
        let mesh = try TestMesh(upstreamPort: upstream.port)
        var configuration = HBONEServer.Configuration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let denying = HBONEServer(configuration: configuration, identity: mesh.serverIdentity, certificates: mesh.manager) { _ in
            .reject(.unauthorized, reason: "policy")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await mesh.manager.run() }
            group.addTask { try await denying.run() }
            defer { group.cancelAll() }
            let port = try await denying.listeningAddress.port
            await #expect(throws: HBONEClientError.status(401)) {
                _ = try await mesh.client.openStream(mesh.target(port: port), on: MultiThreadedEventLoopGroup.singleton.next()).get()
            }
        }
        await upstream.close()
    }

    @Test(
        "back-pressure end to end: an upstream that stops reading stalls the sender within a bounded amount, and everything arrives once it reads",
        arguments: [true, false]
    )
    func backPressure(splice: Bool) async throws {
        let counters = Counters()
        let sink = try BlockingTCPServer { socket in
            while !counters.reading.load(ordering: .acquiring) { usleep(10_000) }
            while true {
                let chunk = socket.receive()
                if chunk.isEmpty { break }
                counters.received.add(chunk.count, ordering: .relaxed)
            }
        }
        defer { sink.stop() }
        var configuration = HBONEConfiguration()
        configuration.splicesData = splice
        let mesh = try TestMesh(upstreamPort: sink.port, configuration: configuration)
        try await mesh.run { port in
            try await mesh.withForwarder(serverPort: port) { local in
                let total = 160 << 20
                let writer = Task {
                    try await offload { () throws -> Bool in
                        let socket = try BlockingSocket.connect(port: local)
                        let chunk = [UInt8](repeating: 0x5a, count: 64 << 10)
                        for _ in 0..<(total / chunk.count) {
                            guard socket.send(chunk) else { return false }
                            counters.written.add(chunk.count, ordering: .relaxed)
                        }
                        socket.shutdownWrite()
                        _ = socket.receiveAll()
                        return true
                    }
                }
                // Every hop buffers some (socket buffers, the 4 MiB stream window, the 1 MiB
                // write watermark); without back-pressure the writer would never stop.
                try await pause(.seconds(2))
                let stalled = counters.written.load(ordering: .relaxed)
                try await pause(.milliseconds(500))
                #expect(counters.written.load(ordering: .relaxed) == stalled, "the writer kept going while nothing was read")
                #expect(stalled < 64 << 20, "\(stalled >> 20) MiB accepted while the upstream read nothing")
                #expect(stalled > 4 << 20, "the tunnel carried at least a stream window before stalling")
                #expect(counters.received.load(ordering: .relaxed) == 0)
                counters.reading.store(true, ordering: .releasing)
                let completed = try await writer.value
                #expect(completed, "the writer's connection failed")
                try await eventually(timeout: .seconds(60), "all bytes at the upstream") {
                    counters.received.load(ordering: .relaxed) == total
                }
            }
        }
    }
}

extension HBONEClientTests {
    /// An upstream whose connections say what it does by their first byte: 'S' stalls
    /// (reads nothing more until `counters.reading`), 'R' reads everything and counts it.
    fileprivate static func modeSink(_ counters: Counters) throws -> BlockingTCPServer {
        try BlockingTCPServer { socket in
            guard let mode = socket.receive(maximum: 1).first else { return }
            if mode == UInt8(ascii: "S") {
                while !counters.reading.load(ordering: .acquiring) { usleep(10_000) }
            }
            while true {
                let chunk = socket.receive()
                if chunk.isEmpty { break }
                if mode == UInt8(ascii: "R") { counters.received.add(chunk.count, ordering: .relaxed) }
            }
        }
    }

    /// Sends `total` bytes through the forwarder on `port` to ``modeSink(_:)``'s reading
    /// mode ('R'), and waits until the upstream has them all.
    fileprivate static func sendToReadingUpstream(_ total: Int, port: Int, _ counters: Counters, timeout: Duration) async throws {
        let sent = try await offload { () throws -> Bool in
            let socket = try BlockingSocket.connect(port: port)
            guard socket.send([UInt8(ascii: "R")] + [UInt8](repeating: 2, count: total)) else { return false }
            socket.shutdownWrite()
            return true
        }
        #expect(sent)
        try await eventually(timeout: timeout, "all \(total >> 20) MiB at the reading upstream") {
            counters.received.load(ordering: .relaxed) == total
        }
    }

    @Test("tunnels whose upstreams stop reading do not stall the other tunnels on their connection")
    func stalledTunnelsDoNotBlockOthers() async throws {
        let counters = Counters()
        let sink = try Self.modeSink(counters)
        defer { sink.stop() }
        let mesh = try TestMesh(upstreamPort: sink.port)
        try await mesh.run { port in
            try await mesh.withForwarder(serverPort: port) { local in
                // Eight stalled tunnels over the pooled connections (one per event loop), each
                // filling its 4 MiB stream window and the buffers in front of it: 32 MiB or
                // more held, twice the 16 MiB connection window.
                let stalled = (0..<8).map { _ in
                    Task {
                        try await offload { () throws -> Void in
                            let socket = try BlockingSocket.connect(port: local)
                            _ = socket.send([UInt8(ascii: "S")] + [UInt8](repeating: 1, count: 12 << 20))
                            socket.shutdownWrite()
                            _ = socket.receiveAll()
                        }
                    }
                }
                try await pause(.seconds(2))
                try await Self.sendToReadingUpstream(32 << 20, port: local, counters, timeout: .seconds(30))
                #expect(mesh.client.connectionsStarted <= System.coreCount, "the tunnels shared pooled connections")
                counters.reading.store(true, ordering: .releasing)
                for task in stalled { try await task.value }
            }
        }
    }

    @Test("a stalled tunnel's sender stays stalled while another tunnel moves bulk data over the same connection")
    func stalledTunnelStaysStalledUnderWritabilityFlips() async throws {
        let counters = Counters()
        let sink = try Self.modeSink(counters)
        defer { sink.stop() }
        let mesh = try TestMesh(upstreamPort: sink.port)
        try await mesh.run { port in
            try await mesh.withForwarder(serverPort: port) { local in
                // Stalled tunnels on every pooled connection (one per event loop), their
                // senders writing for as long as the tunnel takes bytes.
                let stalled = (0..<(2 * System.coreCount)).map { _ in
                    Task {
                        try await offload { () throws -> Void in
                            let socket = try BlockingSocket.connect(port: local)
                            guard socket.send([UInt8(ascii: "S")]) else { return }
                            let chunk = [UInt8](repeating: 1, count: 16 << 10)
                            while !counters.reading.load(ordering: .acquiring) {
                                guard socket.send(chunk) else { return }
                                counters.written.add(chunk.count, ordering: .relaxed)
                            }
                            socket.shutdownWrite()
                            _ = socket.receiveAll()
                        }
                    }
                }
                try await pause(.seconds(2))
                let held = counters.written.load(ordering: .relaxed)
                // The bulk tunnel fills and drains each connection's socket over and over: the
                // stream channels' writability follows the connection's, and each flip back
                // to writable must not let a stalled tunnel's sender in for another read burst
                // (its bytes wait in the splicer for a window that never opens).
                try await Self.sendToReadingUpstream(192 << 20, port: local, counters, timeout: .seconds(60))
                let after = counters.written.load(ordering: .relaxed)
                #expect(after - held <= 256 << 10, "the stalled senders got \((after - held) >> 10) KiB more in while the bulk tunnel ran")
                counters.reading.store(true, ordering: .releasing)
                for task in stalled { try await task.value }
            }
        }
    }
}

/// Shared between the test, its writer thread and the upstream's thread.
private final class Counters: Sendable {
    let reading = Atomic<Bool>(false)
    let received = Atomic<Int>(0)
    let written = Atomic<Int>(0)
}
