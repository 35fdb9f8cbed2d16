public import NIOCore
internal import NIOPosix

/// A plain TCP upstream for tunnel tests: reads until the client half-closes, then
/// answers `echo:<everything received>` and closes. Seeing the answer proves that the
/// client's FIN crossed the tunnel and that data still flowed back afterwards.
public final class EchoUntilEOFServer: Sendable {
    private let channel: any Channel

    /// The bound port on 127.0.0.1.
    public var port: Int { self.channel.localAddress?.port ?? 0 }

    /// Starts listening on 127.0.0.1 on a free port.
    public init() async throws {
        self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoUntilEOFHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    /// Stops listening.
    public func close() async {
        try? await self.channel.close()
    }
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
        context.writeAndFlush(Self.wrapOutboundOut(answer)).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
