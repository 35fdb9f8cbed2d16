import InternetAddress
import Logging
import Crypto
import Foundation
@testable import HBONE
import MeshIdentity
import MeshTestSupport
import NIOCore
import NIOPosix
import Testing

/// Our client against independent HBONE servers, and independent clients against our
/// server: a Python `ssl` + `h2` server (`Tests/Interop/hbone_server.py`) and the C
/// nghttp2 + OpenSSL peer (`Tests/Interop/hbone-peer`) in both roles.
@Suite("HBONE peers: Python h2 and C nghttp2+OpenSSL", .serialized)
struct HBONEPeerInteropTests {
    enum Peer: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case python
        case nghttp2

        var testDescription: String { self == .python ? "Python ssl+h2" : "C nghttp2+OpenSSL" }
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Builds the C peer with `scripts/build-hbone-peer` (gcc, libnghttp2, OpenSSL) once.
    static let cPeer: String? = {
        let script = root.appendingPathComponent("scripts/build-hbone-peer").path
        guard FileManager.default.isExecutableFile(atPath: script),
              let result = try? ExternalTool.runBlocking([script], timeout: .seconds(120)), result.status == 0
        else { return nil }
        return result.standardOutput.split(separator: "\n").last.map(String.init)
    }()

    func available(_ peer: Peer) -> Bool {
        switch peer {
        case .python: HBONEInteropTests.pythonH2Available
        case .nghttp2: Self.cPeer != nil
        }
    }

    /// Starts `peer` as an HBONE server presenting `httpbin`'s certificate.
    func startServer(
        _ peer: Peer, _ fixture: HBONEInteropTests.Fixture, upstream: Int, status: Int? = nil, extra: [String] = []
    ) async throws -> ExternalPeer {
        try fixture.writeClient(name: "httpbin", identity: fixture.serverIdentity, authority: fixture.ca)
        switch peer {
        case .python:
            var arguments = [
                "python3", Self.root.appendingPathComponent("Tests/Interop/hbone_server.py").path,
                "--cert", fixture.path("httpbin.pem"), "--key", fixture.path("httpbin.key"), "--ca", fixture.path("root.pem"),
                "--trust-domain", "cluster.local", "--port", "0", "--upstream", "127.0.0.1:\(upstream)",
            ]
            if let status { arguments += ["--status", "\(status)"] }
            return try await ExternalPeer(arguments + extra)
        case .nghttp2:
            return try await ExternalPeer([
                Self.cPeer!, "server", "--listen", "127.0.0.1:0", "--cert", fixture.path("httpbin.pem"),
                "--key", fixture.path("httpbin.key"), "--ca", fixture.path("root.pem"), "--trust-domain", "cluster.local",
                "--upstream", "127.0.0.1:\(upstream)",
            ])
        }
    }

    func target(_ fixture: HBONEInteropTests.Fixture, port: Int, expecting: SPIFFEID? = nil) -> HBONETunnelTarget {
        HBONETunnelTarget(
            source: spiffe("default", "sleep"), nextHop: HBONEAddress(ip: .v4(127, 0, 0, 1), port: UInt16(port)),
            expectedIdentities: [expecting ?? fixture.serverIdentity], authority: HBONEAddress(ip: .v4(127, 0, 0, 1), port: 8080)
        )
    }

    func exchange(_ client: HBONEClient, _ target: HBONETunnelTarget, _ text: String) async throws -> String {
        try await self.echo(client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next()), text)
    }

    /// Writes `text`, half-closes, and returns everything read until the tunnel ends.
    func echo(_ tunnel: HBONETunnel, _ text: String) async throws -> String {
        try await tunnel.executeThenClose { inbound, outbound in
            try await outbound.write(Array(text.utf8))
            outbound.finish()
            var received: [UInt8] = []
            for try await chunk in inbound { received += chunk }
            return String(decoding: received, as: UTF8.self)
        }
    }

    /// Runs `body` with `peer` serving HBONE in front of the fixture's echo upstream and one
    /// of our clients, all on the fixture's CA.
    func withPeerServer(
        _ peer: Peer, status: Int? = nil, extra: [String] = [], client configuration: HBONEConfiguration = HBONEConfiguration(),
        _ body: (HBONEInteropTests.Fixture, ExternalPeer, HBONEClient) async throws -> Void
    ) async throws {
        let fixture = try await HBONEInteropTests.Fixture()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await fixture.manager.run() }
            defer { group.cancelAll() }
            // Starting and stopping a peer blocks (it waits for its `listening` line): off the
            // Swift concurrency pool, which the code under test needs.
            let server = try await self.startServer(peer, fixture, upstream: fixture.upstream.port, status: status, extra: extra)
            let client = HBONEClient(certificates: fixture.manager, configuration: configuration)
            do {
                try await body(fixture, server, client)
            } catch {
                await client.closeAllConnections()
                _ = try? await offload { server.stop() }
                throw error
            }
            // Our pooled connection is closed first, so the peer is not left serving it.
            await client.closeAllConnections()
            _ = try await offload { server.stop() }
        }
        await fixture.upstream.close()
    }

    @Test("our client tunnels through an independent server: echo, 20 concurrent streams, one connection", arguments: Peer.allCases)
    func clientThroughPeer(_ peer: Peer) async throws {
        try #require(self.available(peer), "\(peer.testDescription) peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(peer) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            #expect(try await self.exchange(client, target, "hello \(peer)") == "echo:hello \(peer)")
            let answers = try await withThrowingTaskGroup(of: Bool.self) { streams in
                for index in 0..<20 {
                    streams.addTask { try await self.exchange(client, target, "s\(index)") == "echo:s\(index)" }
                }
                return try await streams.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(answers == 20, "\(server.logs)")
            #expect(client.connectionsStarted <= 2, "pooled: one connection per event loop at most")
        }
    }

    /// RFC 9113 §5.1.2: "Endpoints MUST NOT exceed the limit set by their peer." A stream
    /// over the server's limit would wait in nio-http2's buffer, unanswered, until another
    /// ends; the pool opens another connection for it instead, as ztunnel's does.
    @Test("our client honours a server's SETTINGS_MAX_CONCURRENT_STREAMS: a third tunnel to a 2-stream server gets a second connection",
          .timeLimit(.minutes(1)))
    func peerStreamLimit() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, extra: ["--max-concurrent-streams", "2"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            var tunnels: [HBONETunnel] = []
            for _ in 0..<3 { tunnels.append(try await client.connect(target, on: loop)) }
            #expect(client.pooledConnections(to: target.nextHop) == 2, "\(server.logs)")
            #expect(client.connectionsStarted == 2)
            for (index, tunnel) in tunnels.enumerated() {
                #expect(try await self.echo(tunnel, "t\(index)") == "echo:t\(index)")
            }
        }
    }

    /// RFC 9113 §8.7: REFUSED_STREAM means "not processed", safe to retry; a CONNECT that
    /// crosses a server's GOAWAY gets it from nio-http2 and from hyper alike.
    @Test("a CONNECT refused with REFUSED_STREAM is retried once: one refusal is invisible, two fail the tunnel")
    func refusedStreamRetried() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, extra: ["--refuse-first", "3"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            // Refusals 1 and 2: the retry is refused too, and the error says so.
            await #expect(throws: (any Error).self) { _ = try await self.exchange(client, target, "twice") }
            // Refusal 3, then the retry gets its tunnel.
            #expect(try await self.exchange(client, target, "again") == "echo:again")
            try await eventually("three refusals logged") {
                server.logs.components(separatedBy: "refused (REFUSED_STREAM)").count - 1 == 3
            }
        }
    }

    /// RFC 9113 §6.8: after a GOAWAY the client opens no new streams on the connection;
    /// the one already open keeps working, and once it ends our client closes the
    /// connection (with a GOAWAY of its own), as hyper's does, instead of idling on it.
    @Test("after a server's GOAWAY the open tunnel keeps working, the next goes on a new connection, and the old one is closed once idle",
          .timeLimit(.minutes(1)))
    func closesAfterGoAway() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, extra: ["--goaway-after", "1"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            let first = try await client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next())
            try await eventually("the GOAWAY took the connection out of the pool") {
                client.pooledConnections(to: target.nextHop) == 0
            }
            // A second tunnel while the first is open: a new connection.
            #expect(try await self.exchange(client, target, "second") == "echo:second")
            #expect(client.connectionsStarted == 2)
            #expect(server.logs.components(separatedBy: "the peer closed the connection").count - 1 <= 1,
                    "the first connection still carries a tunnel: \(server.logs)")
            #expect(try await self.echo(first, "first") == "echo:first")
            // Both connections were told to go away after their one tunnel; both are closed by
            // us, each after a GOAWAY(NO_ERROR).
            // (The server logs the close before the frames that came with it.)
            try await eventually("the client closed both connections, each after a GOAWAY(NO_ERROR)") {
                server.logs.components(separatedBy: "the peer closed the connection").count - 1 == 2
                    && server.logs.components(separatedBy: "GOAWAY from peer, error <ErrorCodes.NO_ERROR").count - 1 == 2
            }
        }
    }

    /// RFC 9113 §6.8: streams above a GOAWAY's last stream ID "were not processed"; §8.7:
    /// such a request can be retried. nio-http2 ends them with CANCEL; ours go to a new
    /// connection instead of failing (a server that drains with a single GOAWAY).
    @Test("a CONNECT above the last stream ID of a server's single GOAWAY is retried on a new connection",
          .timeLimit(.minutes(1)))
    func retriedAboveGoAwayLastStream() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, extra: ["--goaway-before", "2"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            // One event loop, so one pool key: the second CONNECT goes on the first's connection.
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let first = try await client.connect(target, on: loop)
            let second = try await client.connect(target, on: loop)
            #expect(try await self.echo(second, "second") == "echo:second", "\(server.logs)")
            #expect(client.connectionsStarted == 2)
            #expect(server.logs.contains("sent GOAWAY, last stream 1"), "\(server.logs)")
            #expect(try await self.echo(first, "first") == "echo:first", "the tunnel below the last stream ID goes on")
        }
    }

    /// RFC 9113 §6.9: a stream WINDOW_UPDATE may precede the response; our client reads
    /// on until the response arrives instead of spending its one read on it.
    @Test("a stream WINDOW_UPDATE before the 200 (written separately) does not stall the CONNECT", .timeLimit(.minutes(1)))
    func windowUpdateBeforeResponse() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, extra: ["--window-update-first"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            for index in 0..<5 {
                let answer = try await self.exchange(client, target, "w\(index)")
                #expect(answer == "echo:w\(index)", "\(server.logs)")
            }
        }
    }

    /// A reset that comes with the 200 (one read burst) is an error for the tunnel, never
    /// a clean end, and a spliced tunnel's app connection is closed instead of waiting.
    @Test("a stream reset right behind its 200 fails the tunnel, both as HBONETunnel and spliced", .timeLimit(.minutes(1)))
    func resetBehindResponse() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, extra: ["--reset-after-200"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            for _ in 0..<5 {
                // The error may come from connect (reset in the 200's read burst) or from
                // the first read (a later burst); a clean end would hide the reset.
                // Read only: a write would fail on the closed stream and hide a clean end.
                let clean = try? await client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next()).executeThenClose { inbound, _ in
                    var received: [UInt8] = []
                    for try await chunk in inbound { received += chunk }
                    return received
                }
                #expect(clean == nil, "\(server.logs)")
            }
            let forwarder = HBONEForwarder(port: 0, client: client, target: target)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await forwarder.run() }
                defer { group.cancelAll() }
                let port = try await forwarder.listeningPort
                for _ in 0..<5 {
                    let started = ContinuousClock.now
                    let exchange = try await offload { BlockingTCP.exchange(port: port, payload: Array("x".utf8), timeoutSeconds: 10) }
                    #expect(exchange.received.isEmpty)
                    #expect(ContinuousClock.now - started < .seconds(5), "the app's connection ends, it is not left waiting")
                }
            }
        }
    }

    /// A 200 with END_STREAM: the server will send nothing, so the tunnel's inbound side
    /// ends at once (TCP FIN ⇄ END_STREAM), while our side can still send.
    @Test("a 200 that carries END_STREAM ends the tunnel's inbound side at once", .timeLimit(.minutes(1)))
    func responseWithEndStream() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python, status: 200) { fixture, server, client in
            let tunnel = try await client.connect(self.target(fixture, port: server.port), on: MultiThreadedEventLoopGroup.singleton.next())
            let received = try await tunnel.executeThenClose { inbound, outbound in
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk }
                return received
            }
            #expect(received.isEmpty)
        }
    }

    @Test("a target with no expected server identity is refused before connecting (fail closed)")
    func noExpectedIdentity() async throws {
        try #require(self.available(.python), "Python ssl+h2 peer unavailable (scripts/install-deps installs it)")
        try await self.withPeerServer(.python) { fixture, server, client in
            var target = self.target(fixture, port: server.port)
            target.expectedIdentities = []
            await #expect(throws: HBONEClientError.handshake("no expected server identity given for \(target.nextHop)")) {
                _ = try await client.connect(target)
            }
            #expect(client.connectionsStarted == 0)
        }
    }

    /// The spliced data path (``OutboundDataSplicer``, ``InboundDataSplicer``) against a
    /// server that keeps HTTP/2's defaults: 65,535-byte stream and connection windows, no
    /// WINDOW_UPDATE that opens the connection at the start, 16 KiB frames. h2 ends the
    /// connection with FLOW_CONTROL_ERROR or FRAME_SIZE_ERROR if we send one byte too many.
    @Test("our spliced client sends 8 MiB through a Python h2 server with HTTP/2's default windows and 16 KiB frames, both ways intact")
    func splicedClientWithinPeerWindows() async throws {
        try await self.withDefaultWindowsPeer { _, server, _, _, port in
            var generator = SeededGenerator(seed: 7)
            let payload = (0..<(8 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let exchange = try await offload { BlockingTCP.exchange(port: port, payload: payload, timeoutSeconds: 60) }
            #expect(exchange.errorNumber == 0)
            #expect(exchange.received.count == payload.count + 5, "\(server.logs)")
            #expect(SHA256.hash(data: exchange.received) == SHA256.hash(data: Array("echo:".utf8) + payload))
            #expect(!server.logs.contains("error"), "\(server.logs)")
        }
    }

    /// The Python server with HTTP/2's default windows and frame size, and a forwarder
    /// (spliced tunnels) through our client to it; `body` gets the forwarder's port.
    func withDefaultWindowsPeer(
        _ body: (HBONEInteropTests.Fixture, ExternalPeer, HBONEClient, HBONETunnelTarget, Int) async throws -> Void
    ) async throws {
        try #require(self.available(.python), "python3 with the h2 package is required")
        let extra = ["--stream-window", "65535", "--connection-window", "65535", "--max-frame", "16384"]
        try await self.withPeerServer(.python, extra: extra) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            let forwarder = HBONEForwarder(port: 0, client: client, target: target)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await forwarder.run() }
                defer { group.cancelAll() }
                try await body(fixture, server, client, target, try await forwarder.listeningPort)
            }
        }
    }

    /// nio-http2's own DATA (an ``HBONETunnel`` stream) on the connections that spliced
    /// tunnels use, against HTTP/2's default windows: the real connection window is shared,
    /// so nio-http2's frames sometimes wait in the splicer. Both kinds must finish.
    @Test("spliced tunnels and HBONETunnel streams share pooled connections within a Python h2 server's default windows")
    func splicedAndNioStreamsShareWindows() async throws {
        try await self.withDefaultWindowsPeer { _, server, client, target, port in
            do {
                var generator = SeededGenerator(seed: 11)
                let payload = (0..<(2 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let expected = SHA256.hash(data: Array("echo:".utf8) + payload)
                // One HBONETunnel per event loop, so one shares each pooled connection.
                let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
                let results = try await withThrowingTaskGroup(of: Bool.self) { tunnels in
                    for index in 0..<4 {
                        tunnels.addTask {
                            let exchange = try await offload { BlockingTCP.exchange(port: port, payload: payload, timeoutSeconds: 60) }
                            return SHA256.hash(data: exchange.received) == expected
                        }
                        let loop = loops[index % loops.count]
                        tunnels.addTask {
                            let tunnel = try await client.connect(target, on: loop)
                            let received = try await tunnel.executeThenClose { inbound, outbound in
                                try await outbound.write(payload)
                                outbound.finish()
                                var received: [UInt8] = []
                                for try await chunk in inbound { received += chunk }
                                return received
                            }
                            return SHA256.hash(data: received) == expected
                        }
                    }
                    return try await tunnels.reduce(into: [Bool]()) { $0.append($1) }
                }
                #expect(results.count == 8)
                #expect(results.allSatisfy { $0 }, "\(server.logs)")
                #expect(!server.logs.contains("error"), "\(server.logs)")
            }
        }
    }

    /// RFC 9113 §6.9.1: a WINDOW_UPDATE that pushes a stream's window above 2^31−1 ends that
    /// stream with RST_STREAM FLOW_CONTROL_ERROR. The Python server sends one, as raw bytes,
    /// once the first tunnel's stream has carried 1 KiB. The stream is spliced (the default),
    /// so the splicer holds its window and decides (its verdict is checked without I/O in
    /// `OutboundDataSplicerTests`); nio-http2 would reset an unspliced stream the same way on
    /// the wire. Until the sixth session the splicer ended the whole connection instead. The
    /// connection must go on carrying the other tunnels (all on one event loop, so on one
    /// pooled connection).
    @Test("a spliced stream whose window the peer pushes above 2^31−1 is reset with FLOW_CONTROL_ERROR; its connection goes on")
    func splicedStreamWindowOverflow() async throws {
        try #require(self.available(.python), "python3 with the h2 package is required")
        try await self.withPeerServer(.python, extra: ["--overflow-window-after", "1024"]) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            try await self.withForwarder(client, target) { port in
                try await self.overflowThenMoreTunnels(server, client, target, port: port)
            }
        }
    }

    /// Sends 1 KiB to a tunnel's local port without half-closing, and returns how long it
    /// then took our side to close the app connection (30 s at most).
    static func sendKiBAndWaitForClose(port: Int) async throws -> Duration {
        try await offload { () throws -> Duration in
            let socket = try BlockingSocket.connect(port: port)
            socket.send(Array(repeating: 0x61, count: 1024))
            let start = ContinuousClock.now
            _ = socket.receiveAll()
            return ContinuousClock.now - start
        }
    }

    /// An ``HBONEForwarder`` from a local port to `target` through `client`, for `body`.
    private func withForwarder(_ client: HBONEClient, _ target: HBONETunnelTarget, _ body: (Int) async throws -> Void) async throws {
        let forwarder = HBONEForwarder(
            port: 0, client: client, target: target, logger: Logger(label: "test"),
            group: MultiThreadedEventLoopGroup.singleton.next()
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await forwarder.run() }
            defer { group.cancelAll() }
            try await body(try await forwarder.listeningPort)
        }
    }

    private func overflowThenMoreTunnels(_ server: ExternalPeer, _ client: HBONEClient, _ target: HBONETunnelTarget, port: Int) async throws {
        // The stream stays open (no FIN): only the reset ends this tunnel.
        let waited = try await Self.sendKiBAndWaitForClose(port: port)
        #expect(waited < .seconds(10), "the reset closed the tunnel's app connection")
        try await eventually("the server saw the stream reset") { server.logs.contains(#""stream": 1,"#) }
        let reset = server.logs.split(separator: "\n").first { $0.contains(#""stream": 1,"#) }
        #expect(reset?.contains(#""reset": 3"#) == true, "FLOW_CONTROL_ERROR (0x3): \(server.logs)")

        for round in 0..<3 {
            let payload = Array("tunnel \(round) after the reset".utf8)
            let exchange = try await offload { BlockingTCP.exchange(port: port, payload: payload, timeoutSeconds: 20) }
            #expect(exchange.received == Array("echo:".utf8) + payload, "\(server.logs)")
        }
        // Streams 3, 5 and 7: the same connection, which saw no GOAWAY.
        try await eventually("the later streams logged") { server.logs.contains(#""stream": 7,"#) }
        #expect(client.pooledConnections(to: target.nextHop) == 1)
        #expect(!server.logs.contains("GOAWAY"), "\(server.logs)")
        #expect(!server.logs.contains("protocol error"), "\(server.logs)")
    }

    /// RFC 9113 §5.4.1: a connection error — here a DATA frame on stream 0 (§6.1), which the
    /// Python server sends as raw bytes once the first tunnel has carried 1 KiB — is answered
    /// with GOAWAY PROTOCOL_ERROR, and "the endpoint MUST close the TCP connection".
    /// nio-http2 sends the GOAWAY and leaves closing to its user (``ErrorGoAwayWatch``);
    /// before the eighth session the connection stayed open with its tunnel hanging.
    @Test("a peer server's connection error: GOAWAY PROTOCOL_ERROR, the connection closed, the next tunnel on a new one",
          arguments: [true, false])
    func clientClosesAfterConnectionError(splicesData: Bool) async throws {
        try #require(self.available(.python), "python3 with the h2 package is required")
        // Spliced, `DataSplicerHandler` watches nio-http2's output; not, `RecordCoalescer` does.
        var configuration = HBONEConfiguration()
        configuration.splicesData = splicesData
        try await self.withPeerServer(.python, extra: ["--protocol-error-after", "1024"], client: configuration) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            try await self.withForwarder(client, target) { port in
                let waited = try await Self.sendKiBAndWaitForClose(port: port)
                #expect(waited < .seconds(10), "the connection error ended the tunnel")
                try await eventually("the server saw our GOAWAY") { server.logs.contains("GOAWAY from peer") }
                let goAway = server.logs.split(separator: "\n").first { $0.contains("GOAWAY from peer") }
                #expect(goAway?.contains("PROTOCOL_ERROR") == true, "\(server.logs)")
                // The Python server keeps its end open: the close is ours.
                try await eventually("our client closed the connection") { server.logs.contains("the peer closed the connection") }
                try await eventually("the connection left the pool") { client.pooledConnections(to: target.nextHop) == 0 }
                let payload = Array("after the connection error".utf8)
                let exchange = try await offload { BlockingTCP.exchange(port: port, payload: payload, timeoutSeconds: 20) }
                #expect(exchange.received == Array("echo:".utf8) + payload, "\(server.logs)")
                #expect(client.connectionsStarted == 2, "a new connection for the next tunnel")
            }
        }
    }

    /// The client side of `HBONEInteropTests.hostileFrames`: the Python server answers each
    /// connection's tunnel with 200 and, on its first DATA, writes mutated raw frames
    /// (`hbone_fuzz_client.py`'s) to our client. One tunnel per connection (no pooling), so
    /// every connection meets the fuzz. Whatever arrives, the client must answer protocol
    /// errors with GOAWAY and close those connections itself (the server lingers), and go on: connection N+1 is not fuzzed and must carry
    /// a tunnel normally. DATA the server sends on the tunnel's stream, garbled or not, is
    /// the tunnel's answer and reaches the app like any other. A tunnel whose app has
    /// finished but whose server never ends its side stays half-closed, as TCP's half-close
    /// semantics require (keepalive ends the connection only if PINGs go unanswered), so
    /// the check for leaks is that every connection closes once the server goes away.
    @Test("hostile HTTP/2 from a peer server after its 200: GOAWAY for errors, the client goes on, nothing leaks")
    func clientAgainstHostileServer() async throws {
        try #require(self.available(.python), "python3 with the h2 package is required")
        let connections = 60
        var configuration = HBONEConfiguration()
        configuration.http2.clientMaximumStreamsPerConnection = 1
        configuration.poolIdleTimeout = .zero
        let extra = ["--fuzz-connections", "\(connections)", "--fuzz-seed", "5"]
        try await self.withPeerServer(.python, extra: extra, client: configuration) { fixture, server, client in
            let target = self.target(fixture, port: server.port)
            try await self.withForwarder(client, target) { port in
                for round in 0..<connections {
                    let payload = Array("round \(round)".utf8)
                    _ = try await offload { BlockingTCP.exchange(port: port, payload: payload, timeoutSeconds: 2) }
                }
                #expect(client.connectionsStarted == connections, "one connection per tunnel")
                let payload = Array("after the fuzz".utf8)
                let exchange = try await offload { BlockingTCP.exchange(port: port, payload: payload, timeoutSeconds: 10) }
                #expect(exchange.received == Array("echo:".utf8) + payload, "\(server.logs)")
                // Our client answered protocol errors with GOAWAY and an RFC 9113 error code
                // (a NO_ERROR one precedes each close of an idle connection, the unfuzzed
                // last one's included).
                func addresses(logging what: String, unless other: String = "\u{0}") -> Set<Substring> {
                    // "connection 127.0.0.1:41234: …", up to the ": ".
                    Set(server.logs.split(separator: "\n").filter {
                        $0.hasPrefix("connection ") && $0.contains(what) && !$0.contains(other)
                    }.compactMap { line in line.range(of: ": ").map { line[..<$0.lowerBound] } })
                }
                let errorGoAways = addresses(logging: "GOAWAY from peer", unless: "NO_ERROR")
                #expect(errorGoAways.count >= 10, "\(server.logs)")
                // …and closed each of those connections itself: the server keeps its end
                // open after a GOAWAY and logs when the other end closes.
                try await eventually("our client closed every connection it sent an error GOAWAY on") {
                    errorGoAways.isSubset(of: addresses(logging: "the peer closed the connection"))
                }
                _ = try await offload { server.stop() }
                try await eventually("every connection closed with the server gone") {
                    client.pooledConnections(to: target.nextHop) == 0
                }
            }
        }
    }

    @Test("our client refuses a peer server with an unexpected identity", arguments: Peer.allCases)
    func clientChecksPeerIdentity(_ peer: Peer) async throws {
        try #require(self.available(peer), "\(peer.testDescription) peer unavailable")
        try await self.withPeerServer(peer) { fixture, server, client in
            await #expect {
                _ = try await self.exchange(client, self.target(fixture, port: server.port, expecting: spiffe("default", "reviews")), "x")
            } throws: { error in
                guard case HBONEClientError.handshake(let detail) = error else { return false }
                return detail.contains("httpbin")
            }
        }
    }

    @Test("a peer server's non-200 answer fails our tunnel with that status")
    func clientSeesPeerStatus() async throws {
        try #require(self.available(.python), "python3 with the h2 package is required")
        try await self.withPeerServer(.python, status: 401) { fixture, server, client in
            await #expect(throws: HBONEClientError.status(401)) {
                _ = try await self.exchange(client, self.target(fixture, port: server.port), "x")
            }
        }
    }

    @Test("the C nghttp2+OpenSSL client tunnels through our server, many times and concurrently")
    func cClientThroughOurServer() async throws {
        try #require(self.available(.nghttp2), "C nghttp2+OpenSSL peer unavailable")
        try await HBONEInteropTests().withFixture { fixture, port in
            let client = try await ExternalPeer([
                Self.cPeer!, "client", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:\(port)",
                "--authority", "127.0.0.1:8080", "--cert", fixture.path("client.pem"), "--key", fixture.path("client.key"),
                "--ca", fixture.path("root.pem"), "--expect-identity", fixture.serverIdentity.uri,
            ])
            defer { client.stop() }
            let local = client.port
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        let exchange = try await offload { BlockingTCP.exchange(port: local, payload: Array("c\(index)".utf8)) }
                        return String(decoding: exchange.received, as: UTF8.self) == "echo:c\(index)"
                    }
                }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(results == 20, "\(client.logs)")
            try await eventually("tunnel records") { fixture.records.all.filter { $0.status == .ok }.count >= 20 }
            #expect(fixture.records.all.allSatisfy { $0.request?.peerIdentity == spiffe("default", "sleep") })
        }
    }
}
