internal import NIOCore
internal import NIOHTTP2

/// The HTTP/2 half of an HBONE connection, configured the same way on both ends.
enum HBONEPipeline {
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

    /// Per-stream window and write watermarks.
    static func streamConfiguration(_ configuration: HBONEConfiguration) -> NIOHTTP2Handler.StreamConfiguration {
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = configuration.http2.streamWindow
        stream.outboundBufferSizeHighWatermark = configuration.http2.streamHighWatermark
        stream.outboundBufferSizeLowWatermark = configuration.http2.streamLowWatermark
        return stream
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
