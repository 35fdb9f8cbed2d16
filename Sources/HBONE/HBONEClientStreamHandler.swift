internal import NIOCore
internal import NIOHTTP2
internal import NIOHPACK
internal import NIOTLS

/// Sends one HBONE `CONNECT` and waits for the answer.
///
/// Request (ztunnel `create_hbone_request`; RFC 9113 §8.5): `:method CONNECT`,
/// `:authority ip:port`, no `:scheme`/`:path`, END_STREAM not set; then `forwarded`,
/// `baggage` and `traceparent`. Any status but 200 fails the tunnel.
final class HBONEClientStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let target: HBONETunnelTarget
    private let response: EventLoopPromise<Void>
    private var answered = false

    init(target: HBONETunnelTarget, response: EventLoopPromise<Void>) {
        self.target = target
        self.response = response
    }

    /// The request headers for `target`.
    static func requestHeaders(for target: HBONETunnelTarget) -> HPACKHeaders {
        var headers = HPACKHeaders()
        headers.add(name: ":method", value: "CONNECT")
        headers.add(name: ":authority", value: target.authority.description)
        if let forwarded = target.metadata.forwardedHeader { headers.add(name: "forwarded", value: forwarded) }
        let baggage = target.metadata.baggage.headerValue
        if !baggage.isEmpty { headers.add(name: "baggage", value: baggage) }
        let traceParent = target.metadata.traceParent ?? .random()
        headers.add(name: "traceparent", value: traceParent.description)
        return headers
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.sendRequest(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.sendRequest(context: context)
        context.fireChannelActive()
    }

    private var sent = false

    private func sendRequest(context: ChannelHandlerContext) {
        guard !self.sent else { return }
        self.sent = true
        let headers = Self.requestHeaders(for: self.target)
        context.writeAndFlush(Self.wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        // Hold further reads until the tunnel is spliced.
        TunnelSocketOptions.setAutoRead(context.channel, false)
        context.read()
    }

    /// Frames that came after the 200 in the same read (a server-first protocol's greeting
    /// can share a TCP segment with the response); the splice replays them.
    private(set) var early: [HTTP2Frame.FramePayload] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = Self.unwrapInboundIn(data)
        if self.answered {
            self.early.append(payload)
            return
        }
        guard case .headers(let headers) = payload else { return }
        self.answered = true
        let status = headers.headers.first(name: ":status").flatMap(Int.init) ?? 0
        if status == 200 {
            // Succeeded at the end of this read burst, not now: the promise's callbacks
            // remove this handler, and DATA in the same burst would then fall off the
            // pipeline instead of landing in `early`.
            self.established = true
        } else {
            self.response.fail(HBONEClientError.status(status))
            context.close(promise: nil)
        }
    }

    private var established = false
    private var reported = false

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.established, !self.reported {
            self.reported = true
            self.response.succeed()
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.established, !self.reported {
            self.reported = true
            self.response.succeed()
        }
        if !self.answered {
            self.answered = true
            self.response.fail(HBONEClientError.closed)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.answered {
            self.answered = true
            self.response.fail(error)
        }
        context.close(promise: nil)
    }
}

/// Completes a promise when the TLS handshake finishes (or fails / the channel closes), then
/// leaves the pipeline, so later reads do not pass through it.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any

    private let promise: EventLoopPromise<Void>
    private var done = false

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, !self.done {
            self.done = true
            self.promise.succeed()
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.done {
            self.done = true
            self.promise.fail(error)
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.done {
            self.done = true
            self.promise.fail(HBONEClientError.closed)
        }
        context.fireChannelInactive()
    }
}

/// Tells the pool what a server's connection-level frames mean for a client connection:
/// GOAWAY takes it out of the pool, and SETTINGS_MAX_CONCURRENT_STREAMS caps the streams
/// it is given (RFC 9113 §5.1.2: "Endpoints MUST NOT exceed the limit set by their peer").
final class PoolConnectionWatcher: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame

    private let onGoAway: @Sendable () -> Void
    private let onMaximumStreams: @Sendable (Int) -> Void

    /// `onGoAway` takes the connection out of the pool; streams already open keep running
    /// (nio-http2 serves those below the GOAWAY's last stream ID and closes the connection
    /// after the last one ends). `onMaximumStreams` gets each advertised stream limit.
    init(onGoAway: @escaping @Sendable () -> Void, onMaximumStreams: @escaping @Sendable (Int) -> Void) {
        self.onGoAway = onGoAway
        self.onMaximumStreams = onMaximumStreams
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data).payload {
        case .goAway:
            self.onGoAway()
        case .settings(.settings(let settings)):
            // The last value in a frame wins (§6.5: "processed in the order in which they appear").
            if let limit = settings.last(where: { $0.parameter == .maxConcurrentStreams }) {
                self.onMaximumStreams(limit.value)
            }
        default:
            break
        }
        context.fireChannelRead(data)
    }
}
