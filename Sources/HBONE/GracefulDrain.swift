internal import NIOCore
internal import NIOHTTP2

/// A server connection's graceful shutdown as a value type (RFC 9113 §6.8; hyper's
/// graceful shutdown, which ztunnel's server uses). nio-http2 itself refuses streams
/// (REFUSED_STREAM, which a client may retry, §8.7) once no stream is open after the
/// first GOAWAY; the round trip keeps the connection open long enough for the client to
/// read the GOAWAY and those refusals rather than a closed socket.
///
/// "A server that is attempting to gracefully shut down a connection SHOULD send an
/// initial GOAWAY frame with the last stream identifier set to 2^31-1 and a NO_ERROR
/// code. This signals to the client that a shutdown is imminent and that initiating
/// further requests is prohibited. After allowing time for any in-flight stream creation
/// (at least one round-trip time), the server MAY send another GOAWAY frame with an
/// updated last stream identifier." The round trip is measured with a PING; after the
/// second GOAWAY the connection closes as soon as its last stream has ended. The drain
/// deadline that closes it regardless is the caller's (``HBONEConfiguration/drainDeadline``).
struct DrainStateMachine: Sendable {
    enum Action: Equatable, Sendable {
        /// Send GOAWAY (NO_ERROR) with this last stream ID.
        case sendGoAway(lastStreamID: Int32)
        /// Send a PING with this payload; its ACK marks the round trip.
        case sendPing(UInt64)
        /// Close the connection: drained.
        case close
    }

    private enum State: Sendable {
        case serving
        case awaitingRoundTrip
        case finalGoAwaySent
        case closed
    }

    /// The PING payload of the drain ("DRAIN" and a zero byte; keepalive's start with "HBON").
    static let pingPayload: UInt64 = 0x4452_4149_4E00_0000
    /// 2^31-1, the first GOAWAY's last stream ID.
    static let maximumStreamID: Int32 = Int32.max

    private var state = State.serving
    private(set) var openStreams = 0
    private var lastPeerStreamID: Int32 = 0

    /// The peer opened `streamID` (and it was handed to us).
    mutating func streamOpened(_ streamID: Int32) {
        self.openStreams += 1
        self.lastPeerStreamID = max(self.lastPeerStreamID, streamID)
    }

    /// A stream ended.
    mutating func streamClosed() -> Action? {
        self.openStreams = max(0, self.openStreams - 1)
        return self.closeIfIdle()
    }

    /// Begins the drain: the first GOAWAY and the PING that times the round trip.
    mutating func startDrain() -> [Action] {
        guard case .serving = self.state else { return [] }
        self.state = .awaitingRoundTrip
        return [.sendGoAway(lastStreamID: Self.maximumStreamID), .sendPing(Self.pingPayload)]
    }

    /// A PING ACK arrived. The drain's own ends the round trip: the second GOAWAY names
    /// the last stream the client opened, and an idle connection closes now.
    mutating func pingAckReceived(_ payload: UInt64) -> [Action] {
        guard case .awaitingRoundTrip = self.state, payload == Self.pingPayload else { return [] }
        self.state = .finalGoAwaySent
        var actions: [Action] = [.sendGoAway(lastStreamID: self.lastPeerStreamID)]
        if let close = self.closeIfIdle() { actions.append(close) }
        return actions
    }

    private mutating func closeIfIdle() -> Action? {
        guard case .finalGoAwaySent = self.state, self.openStreams == 0 else { return nil }
        self.state = .closed
        return .close
    }
}

/// Runs a server connection's ``DrainStateMachine``: counts the streams the stream
/// initializer hands it, and on ``startDrain()`` sends the two GOAWAYs around a PING round
/// trip and closes the connection once its last stream has ended. It sits after
/// nio-http2, which the spliced data path does not reach, so it costs nothing per message.
final class DrainHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private var machine = DrainStateMachine()
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// A stream of this connection was created; call on the connection's event loop
    /// (stream channels share it).
    func streamOpened(_ stream: any Channel) {
        let id = (try? stream.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)).map { Int32(Int($0)) } ?? 0
        self.machine.streamOpened(id)
        let handler = NIOLoopBound(self, eventLoop: stream.eventLoop)
        stream.closeFuture.whenComplete { _ in
            let handler = handler.value
            handler.perform(handler.machine.streamClosed().map { [$0] } ?? [])
        }
    }

    /// Begins the graceful drain; call on the connection's event loop. A connection not
    /// active yet (accepted, not registered) has sent nothing, nio-http2 included, and
    /// could send no GOAWAY: it is closed.
    func startDrain() {
        guard let context = self.context, context.channel.isActive else {
            self.context?.close(promise: nil)
            return
        }
        self.perform(self.machine.startDrain())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .ping(let ping, ack: true) = Self.unwrapInboundIn(data).payload {
            self.perform(self.machine.pingAckReceived(ping.integer))
        }
        context.fireChannelRead(data)
    }

    private func perform(_ actions: [DrainStateMachine.Action]) {
        guard let context = self.context else { return }
        for action in actions {
            switch action {
            case .sendGoAway(let lastStreamID):
                let frame = HTTP2Frame(
                    streamID: .rootStream,
                    payload: .goAway(lastStreamID: HTTP2StreamID(Int(lastStreamID)), errorCode: .noError, opaqueData: nil)
                )
                context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
            case .sendPing(let payload):
                let frame = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: payload), ack: false))
                context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
            case .close:
                context.close(promise: nil)
            }
        }
    }
}
