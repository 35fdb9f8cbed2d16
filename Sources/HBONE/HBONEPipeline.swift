package import NIOCore
package import NIOHTTP2

/// The HTTP/2 half of an HBONE connection, configured the same way on both ends.
package enum HBONEPipeline {
    /// The three flow-control knobs of swift-nio-http2, all set (its defaults are 11× slower
    /// for tunnels): initial SETTINGS, connection window, stream window and watermarks.
    static func connectionConfiguration(
        _ configuration: HBONEConfiguration, server: Bool
    ) -> NIOHTTP2Handler.ConnectionConfiguration {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        var settings: HTTP2Settings = [
            HTTP2Setting(parameter: .initialWindowSize, value: configuration.http2.streamWindow),
            HTTP2Setting(parameter: .maxFrameSize, value: configuration.http2.maximumFrameSize),
            HTTP2Setting(
                parameter: .maxHeaderListSize,
                value: server ? configuration.http2.serverMaximumHeaderListSize
                    : configuration.http2.clientMaximumHeaderListSize
            ),
        ]
        if server {
            settings.append(
                HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.http2.serverMaximumConcurrentStreams)
            )
        } else {
            settings.append(HTTP2Setting(parameter: .enablePush, value: 0))
        }
        connection.initialSettings = settings
        connection.targetWindowSize = configuration.http2.connectionWindow
        return connection
    }

    /// Everything above TLS on an HBONE connection, the same on both ends: the splicer
    /// (``DataSplicerHandler``, or ``RecordCoalescer`` with splicing off) directly below
    /// nio-http2, which both close the connection after a GOAWAY for an error (D19);
    /// nio-http2 configured as above; the connection window opener; keepalive. Returns
    /// the multiplexer. The fuzz target `http2-connection` (`Tests/Fuzz`) runs this on an
    /// `EmbeddedChannel`, so what it checks is what the server and client run.
    package static func configure(
        _ pipeline: ChannelPipeline.SynchronousOperations,
        role: InboundDataSplicer.Role,
        configuration: HBONEConfiguration,
        streamInitializer: @escaping NIOChannelInitializer
    ) throws -> NIOHTTP2Handler.StreamMultiplexer {
        // The splicer merges small writes into TLS records itself.
        try pipeline.addHandler(
            configuration.splicesData
                ? DataSplicerHandler(role: role, configuration: configuration) : RecordCoalescer(role: role)
        )
        let multiplexer = try pipeline.configureHTTP2Pipeline(
            mode: role == .server ? .server : .client,
            connectionConfiguration: Self.connectionConfiguration(configuration, server: role == .server),
            streamConfiguration: Self.streamConfiguration(configuration, server: role == .server),
            inboundStreamInitializer: streamInitializer
        )
        try pipeline.addHandler(ConnectionWindowOpener(target: configuration.http2.connectionWindow))
        try pipeline.addHandler(KeepaliveHandler(configuration: configuration.keepalive))
        return multiplexer
    }

    /// Per-stream window and write watermarks; on a client, no limit on inbound resets.
    ///
    /// nio-http2 answers more than 200 RST_STREAM frames in 30 s with GOAWAY
    /// ENHANCE_YOUR_CALM, a server's defence against "rapid reset" clients, which it keeps.
    /// On a client every reset ends a stream the client opened (servers do not push), so
    /// the limit protects nothing there, and a server's rejections would trip it: each
    /// 400/401/503 ends with RST_STREAM(NO_ERROR) (RFC 9113 §8.1, as ours and hyper's
    /// send), and the 201st in 30 s would tear down every tunnel on the pooled connection.
    /// The client's limit is 200 resets within one microsecond: none in practice.
    static func streamConfiguration(_ configuration: HBONEConfiguration, server: Bool) -> NIOHTTP2Handler.StreamConfiguration {
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = configuration.http2.streamWindow
        stream.outboundBufferSizeHighWatermark = configuration.http2.streamHighWatermark
        stream.outboundBufferSizeLowWatermark = configuration.http2.streamLowWatermark
        if !server { stream.streamResetFrameRateLimit.windowLength = .microseconds(1) }
        return stream
    }
}

/// Opens the connection-level receive window to its target as soon as the connection is up.
///
/// RFC 9113 §6.9.2: "When an HTTP/2 connection is first established, new streams are created
/// with an initial flow-control window size of 65,535 octets. The connection flow-control
/// window is also 65,535 octets", and only WINDOW_UPDATE on stream 0 changes it. nio-http2
/// raises it to its target lazily, on its first flow-control event for the connection;
/// DATA taken by ``InboundDataSplicer`` is no such event, so a peer that only sends would
/// stay at 65,535 bytes in flight. Written through `NIOHTTP2Handler`, so its accounting of
/// the window agrees with the peer's. Sits after `NIOHTTP2Handler` and removes itself.
final class ConnectionWindowOpener: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// RFC 9113 §6.9.2's initial connection window.
    static let initialWindow = 65_535
    private let increment: Int
    private var opened = false

    init(target: Int) {
        self.increment = max(0, min(target, Int(Int32.max)) - Self.initialWindow)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.open(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        // After NIOHTTP2Handler's own channelActive, which sent the connection preface.
        context.fireChannelActive()
        self.open(context: context)
    }

    private func open(context: ChannelHandlerContext) {
        guard !self.opened else { return }
        self.opened = true
        if self.increment > 0 {
            let frame = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: self.increment))
            context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
        }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}

/// Sends keepalive PINGs and closes the connection when they go unanswered; see
/// ``KeepaliveStateMachine`` for the rules. Sits after `NIOHTTP2Handler` on the
/// connection channel, where connection-level frames arrive.
final class KeepaliveHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let configuration: HBONEConfiguration.Keepalive
    private var machine: KeepaliveStateMachine?
    private var timer: Scheduled<Void>?

    init(configuration: HBONEConfiguration.Keepalive) {
        self.configuration = configuration
    }

    private static func offset(_ deadline: NIODeadline) -> Duration {
        .nanoseconds(Int64(deadline.uptimeNanoseconds))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        context.fireChannelInactive()
    }

    private func start(context: ChannelHandlerContext) {
        guard self.machine == nil else { return }
        self.machine = KeepaliveStateMachine(
            interval: self.configuration.interval, timeout: self.configuration.timeout,
            now: Self.offset(context.eventLoop.now)
        )
        self.schedule(context: context)
    }

    private func schedule(context: ChannelHandlerContext) {
        guard let machine = self.machine else { return }
        let deadline = NIODeadline.uptimeNanoseconds(UInt64(max(0, machine.nextDeadline.nanoseconds)))
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.fire(context: context)
        }
    }

    private func fire(context: ChannelHandlerContext) {
        guard var machine = self.machine else { return }
        let action = machine.tick(now: Self.offset(context.eventLoop.now))
        self.machine = machine
        switch action {
        case .none:
            break
        case .sendPing(let payload):
            let frame = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: payload), ack: false))
            context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
        case .declareDead:
            context.close(promise: nil)
            return
        }
        self.schedule(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        if case .ping(let ping, ack: true) = frame.payload {
            self.machine?.pingAckReceived(ping.integer)
        }
        context.fireChannelRead(data)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    var timeAmount: TimeAmount { .nanoseconds(self.nanoseconds) }
}

/// Channel options set synchronously on the event loop, for the channels a tunnel creates
/// per connection. A bootstrap's `channelOption` / `childChannelOption` is applied through
/// two futures per option and connection (`ChannelOptions.Storage.applyAllChannelOptions`),
/// about 13 000 instructions per option in callgrind; set here, one costs about 2 700
/// (`Docs/profiles.md`). Call from a channel initializer, which runs on the channel's event
/// loop before the channel is registered.
enum TunnelSocketOptions {
    /// The plain TCP side of a tunnel (accepted app socket, upstream socket): half-closure
    /// kept (FIN ⇄ END_STREAM), reads manual until the tunnel is spliced, Nagle off, reads
    /// sized by `configuration`'s allocator.
    static func applyToTCPSide(_ channel: any Channel, _ configuration: HBONEConfiguration) throws {
        let options = try self.options(of: channel)
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.autoRead, value: false)
        try options.setOption(.tcpOption(.tcp_nodelay), value: 1)
        try options.setOption(.recvAllocator, value: configuration.readAllocator)
    }

    /// An HBONE connection's socket (before TLS): Nagle off, reads sized by the allocator.
    static func applyToConnection(_ channel: any Channel, _ configuration: HBONEConfiguration) throws {
        let options = try self.options(of: channel)
        try options.setOption(.tcpOption(.tcp_nodelay), value: 1)
        try options.setOption(.recvAllocator, value: configuration.readAllocator)
    }

    /// Turns `autoRead` on or off now (the channel's own `setOption` goes through a future).
    static func setAutoRead(_ channel: any Channel, _ on: Bool) {
        if let options = channel.syncOptions {
            try? options.setOption(.autoRead, value: on)
        } else {
            channel.setOption(.autoRead, value: on).whenComplete { _ in }
        }
    }

    private static func options(of channel: any Channel) throws -> any NIOSynchronousChannelOptions {
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        return options
    }
}
