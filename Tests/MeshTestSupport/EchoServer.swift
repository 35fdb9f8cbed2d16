internal import NIOCore
internal import NIOPosix
internal import Synchronization

/// A plain TCP upstream for tunnel tests: reads until the client half-closes, then
/// answers `echo:<everything received>` and closes. Seeing the answer proves that the
/// client's FIN crossed the tunnel and that data still flowed back afterwards.
public final class EchoUntilEOFServer: Sendable {
    private let channel: any Channel
    private let accepted: PeerLog

    /// The peer (`ip:port`) of every connection accepted so far, in order.
    public var peers: [String] { self.accepted.entries.withLock { $0 } }

    /// The bound port on 127.0.0.1.
    public var port: Int { self.channel.localAddress?.port ?? 0 }

    /// Starts listening on 127.0.0.1 on a free port.
    public convenience init() async throws {
        let accepted = PeerLog()
        try await self.init(accepted, Self.bootstrap(accepted).bind(host: "127.0.0.1", port: 0).get())
    }

    /// Serves a listening socket made elsewhere (inside a pod's namespace, say).
    public convenience init(boundSocket descriptor: Int32) async throws {
        let accepted = PeerLog()
        try await self.init(accepted, Self.bootstrap(accepted).withBoundSocket(descriptor).get())
    }

    private init(_ accepted: PeerLog, _ channel: any Channel) {
        self.accepted = accepted
        self.channel = channel
    }

    private static func bootstrap(_ accepted: PeerLog) -> ServerBootstrap {
        ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                let peer = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                accepted.entries.withLock { $0.append(peer) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoUntilEOFHandler())
                }
            }
    }

    /// Stops listening.
    public func close() async {
        try? await self.channel.close()
    }
}

private final class PeerLog: Sendable {
    let entries = Mutex<[String]>([])
}

private final class EchoUntilEOFHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var received = ByteBuffer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        self.received.writeBuffer(&buffer)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return }
        var answer = context.channel.allocator.buffer(string: "echo:")
        answer.writeBuffer(&self.received)
        context.writeAndFlush(Self.wrapOutboundOut(answer)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
