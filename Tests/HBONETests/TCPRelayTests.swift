import Crypto
import Foundation
@testable import HBONE
import MeshTestSupport
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// ``TCPRelay``, the plain TCP splice of the direct and passthrough routes, between real
/// sockets: a request-then-FIN client (HTTP/1.0 style) and an upstream that answers a large
/// response and closes. NIO turns a half-close of a socket whose other half is already
/// shut into a full close, which drops writes still pending in the channel; the relay
/// must shut or close a side only once what it was given has been written.
@Suite("TCP relay")
struct TCPRelayTests {
    /// A relay listening on 127.0.0.1 that splices each accepted connection to
    /// 127.0.0.1:`upstreamPort`; `body` gets its port and the records of closed relays.
    func withRelay(
        upstreamPort: Int, closeDeadline: TimeAmount = .seconds(5), _ body: (Int, Records<TunnelByteCounts>) async throws -> Void
    ) async throws {
        let closed = Records<TunnelByteCounts>()
        let configuration = HBONEConfiguration()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try TunnelSocketOptions.applyToTCPSide(channel, configuration)
                    try channel.pipeline.syncOperations.addHandler(RelayOnActive(upstreamPort: upstreamPort, closeDeadline: closeDeadline) { closed.append($0) })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        do {
            try await body(server.localAddress!.port!, closed)
        } catch {
            try? await server.close()
            throw error
        }
        try await server.close()
    }

    @Test("request, FIN, then a 4 MiB response and FIN to a client that reads late: every byte arrives, the counts match")
    func responseAfterRequestFIN() async throws {
        var generator = SeededGenerator(seed: 3)
        let response = (0..<(4 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let upstream = try BlockingTCPServer { socket in
            // A greeting first, so the client speaks only once the relay is spliced (the
            // listeners in front of a relay keep what arrives earlier; this test has none).
            _ = socket.send(Array("ready\n".utf8))
            _ = socket.receiveAll()  // the request, up to its FIN
            _ = socket.send(response)
            // Closed when `socket` goes: FIN after the response.
        }
        defer { upstream.stop() }
        try await self.withRelay(upstreamPort: upstream.port) { port, closed in
            let received = try await offload { () throws -> [UInt8] in
                let socket = try BlockingSocket.connect(port: port)
                guard socket.receive() == Array("ready\n".utf8) else { return [] }
                _ = socket.send(Array("GET / HTTP/1.0\r\n\r\n".utf8))
                socket.shutdownWrite()
                // Late reader: the relay holds what the upstream sent (NIO drains a socket
                // that reached EOF) while the upstream's FIN arrives.
                Thread.sleep(forTimeInterval: 0.5)
                return socket.receiveAll()
            }
            #expect(received.count == response.count)
            #expect(SHA256.hash(data: received) == SHA256.hash(data: response))
            try await eventually("the relay closed") { closed.values.count == 1 }
            #expect(closed.values.first?.sent == 18)
            #expect(closed.values.first?.received == response.count + 6)
        }
    }

    @Test("the upstream answers and closes first, then the client sends its last bytes and FIN: the upstream gets them all")
    func clientFinishesAfterUpstream() async throws {
        var generator = SeededGenerator(seed: 4)
        let upload = (0..<(24 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let digest = Records<[UInt8]>()
        let upstream = try BlockingTCPServer { socket in
            _ = socket.send(Array("ready\n".utf8))
            socket.shutdownWrite()
            // A slow reader, up to the client's FIN: the relay holds what it cannot write
            // yet when that FIN arrives (NIO drains a socket that reached EOF).
            var hasher = SHA256()
            while true {
                let chunk = socket.receive(maximum: 64 << 10)
                if chunk.isEmpty { break }
                hasher.update(data: chunk)
                usleep(2_000)
            }
            digest.append(Array(hasher.finalize()))
        }
        defer { upstream.stop() }
        try await self.withRelay(upstreamPort: upstream.port) { port, closed in
            let greeting = try await offload { () throws -> [UInt8] in
                let socket = try BlockingSocket.connect(port: port)
                let greeting = socket.receiveAll()  // up to the upstream's FIN
                _ = socket.send(upload)
                socket.shutdownWrite()
                _ = socket.receiveAll()
                return greeting
            }
            #expect(greeting == Array("ready\n".utf8))
            try await eventually("the upstream read to its EOF") { digest.values.count == 1 }
            #expect(digest.values.first == Array(SHA256.hash(data: upload)))
            try await eventually("the relay closed") { closed.values.count == 1 }
            #expect(closed.values.first?.sent == upload.count)
        }
    }

    @Test("both sides finished, and a client that does not read: the relay closes at its close deadline, not never")
    func closeDeadline() async throws {
        // The upstream's send completes and its FIN follows while part of the response
        // still waits in the relay (it holds what it read before the client's socket filled).
        let response = [UInt8](repeating: 0x5a, count: 4 << 20)
        let upstream = try BlockingTCPServer { socket in
            _ = socket.send(Array("ready\n".utf8))
            _ = socket.receiveAll()
            _ = socket.send(response)
        }
        defer { upstream.stop() }
        try await self.withRelay(upstreamPort: upstream.port, closeDeadline: .milliseconds(300)) { port, closed in
            let received = try await offload { () throws -> Int in
                let socket = try BlockingSocket.connect(port: port)
                guard socket.receive() == Array("ready\n".utf8) else { return -1 }
                _ = socket.send(Array("GET / HTTP/1.0\r\n\r\n".utf8))
                socket.shutdownWrite()
                // Reads nothing for well past the deadline, then takes what is left.
                Thread.sleep(forTimeInterval: 2)
                return socket.receiveAll().count
            }
            try await eventually("the relay closed") { closed.values.count == 1 }
            #expect(received > 0, "what had reached the client's socket is still there")
            #expect(received < response.count, "the relay gave up on a client that did not read: \(received) bytes")
        }
    }
}

/// Values appended from any thread.
final class Records<Value: Sendable>: Sendable {
    private let storage = Mutex<[Value]>([])
    func append(_ value: Value) { self.storage.withLock { $0.append(value) } }
    var values: [Value] { self.storage.withLock { $0 } }
}

/// Splices an accepted connection to 127.0.0.1:`upstreamPort` once it is active, as
/// ``TransparentListener`` does after its route decision.
final class RelayOnActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let upstreamPort: Int
    let closeDeadline: TimeAmount
    let onClose: @Sendable (TunnelByteCounts) -> Void

    init(upstreamPort: Int, closeDeadline: TimeAmount, onClose: @escaping @Sendable (TunnelByteCounts) -> Void) {
        self.upstreamPort = upstreamPort
        self.closeDeadline = closeDeadline
        self.onClose = onClose
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let configuration = HBONEConfiguration()
        let relay = NIOLoopBound(TCPRelay(closeDeadline: self.closeDeadline, onClose: self.onClose), eventLoop: channel.eventLoop)
        do {
            try channel.pipeline.syncOperations.addHandler(relay.value.client)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        } catch {
            channel.close(promise: nil)
            return
        }
        ClientBootstrap(group: channel.eventLoop)
            .channelInitializer { upstream in
                upstream.eventLoop.makeCompletedFuture {
                    try TunnelSocketOptions.applyToTCPSide(upstream, configuration)
                    try upstream.pipeline.syncOperations.addHandler(relay.value.upstream)
                }
            }
            .connect(host: "127.0.0.1", port: self.upstreamPort)
            .whenComplete { result in
                switch result {
                case .success: relay.value.start()
                case .failure: channel.close(promise: nil)
                }
            }
        context.fireChannelActive()
    }
}
