internal import NIOCore
internal import NIOPosix
internal import NIOHTTP2
internal import NIOHPACK
internal import MeshIdentity
internal import Logging

/// Serves one `CONNECT` stream: validate, decide, connect upstream, answer, splice.
///
/// The handler only does I/O; the order of events it enforces is RFC 9113 §8.5 and
/// ztunnel's `serve_connect`: the request's HEADERS first; `400` for anything that is
/// not a `CONNECT` with an `ip:port` authority; the decision; `503` if the upstream
/// cannot be connected; `200` only after it is; error responses end the stream.
final class HBONEServerStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private enum State {
        case waitingForHeaders
        case deciding
        case connecting
        case spliced
        case done
    }

    private let peerIdentity: SPIFFEID
    private let peerAddress: HBONEAddress?
    private let localAddress: HBONEAddress?
    private let configuration: HBONEConfiguration
    private let upstreamSockets: HBONESocketProvider?
    private let live: LiveChannels<HBONEInboundRequest>
    private let decide: HBONEServer.Decide
    private let logger: Logger
    private let onClosed: @Sendable (HBONETunnelRecord) -> Void
    private var state = State.waitingForHeaders
    /// When the stream opened, for the record's duration.
    private let opened = ContinuousClock.now
    private var request: HBONEInboundRequest?
    /// DATA and trailers that came in the same read as the request's HEADERS (a client may
    /// send early; later frames wait, unread, until the tunnel is spliced).
    private var early: [HTTP2Frame.FramePayload] = []

    init(
        peerIdentity: SPIFFEID, peerAddress: HBONEAddress?, localAddress: HBONEAddress?,
        configuration: HBONEConfiguration, upstreamSockets: HBONESocketProvider?, live: LiveChannels<HBONEInboundRequest>,
        decide: @escaping HBONEServer.Decide, logger: Logger, onClosed: @escaping @Sendable (HBONETunnelRecord) -> Void
    ) {
        self.upstreamSockets = upstreamSockets
        self.live = live
        self.peerIdentity = peerIdentity
        self.peerAddress = peerAddress
        self.localAddress = localAddress
        self.configuration = configuration
        self.decide = decide
        self.logger = logger
        self.onClosed = onClosed
    }

    /// The stream is read only as far as its HEADERS until the tunnel is spliced: DATA the
    /// client sends before the `200` stays in nio-http2's stream buffer, whose window is
    /// not returned until it is read, so an upstream that is slow to connect (up to
    /// ``HBONEConfiguration/connectTimeout``) holds about two stream windows per stream at
    /// most (nio-http2 may return one window when the client's SETTINGS ACK arrives after
    /// the stream opened; see D9), as ztunnel does by not reading the request body before it answers.
    func handlerAdded(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(.autoRead, value: false)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = Self.unwrapInboundIn(data)
        switch (self.state, payload) {
        case (.waitingForHeaders, .headers(let headers)):
            self.received(headers: headers.headers, endStream: headers.endStream, context: context)
        case (.deciding, .data), (.connecting, .data), (.deciding, .headers), (.connecting, .headers):
            // DATA, and trailers ending the stream (a FIN sent before the 200), replayed in order.
            self.early.append(payload)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.state != .spliced && self.state != .done {
            self.state = .done
            self.onClosed(HBONETunnelRecord(
                request: self.request, status: .ok, reason: "stream closed by the client before it was established",
                bytes: TunnelByteCounts(), duration: self.opened.duration(to: .now)
            ))
        }
        context.fireChannelInactive()
    }

    private func received(headers: HPACKHeaders, endStream: Bool, context: ChannelHandlerContext) {
        let method = headers.first(name: ":method") ?? ""
        guard method == "CONNECT" else {
            return self.respond(.badRequest, reason: "expected method CONNECT, got \(method)", context: context)
        }
        guard let authority = headers.first(name: ":authority"), let target = HBONEAddress(authority: authority) else {
            return self.respond(.badRequest, reason: "no valid authority pseudo header", context: context)
        }
        if endStream {
            return self.respond(.badRequest, reason: "CONNECT request ended its stream", context: context)
        }
        let forwarded = headers.first(name: "forwarded").map(HBONERequestMetadata.parseForwarded)
        let metadata = HBONERequestMetadata(
            forwardedFor: forwarded?.for, forwardedHost: forwarded?.host,
            baggage: headers.first(name: "baggage").map { HBONERequestMetadata.Baggage(headerValue: $0) } ?? .init(),
            traceParent: headers.first(name: "traceparent").flatMap { HBONERequestMetadata.TraceParent(headerValue: $0) }
        )
        let request = HBONEInboundRequest(
            peerIdentity: self.peerIdentity, peerAddress: self.peerAddress, localAddress: self.localAddress,
            target: target, metadata: metadata
        )
        self.request = request
        self.state = .deciding
        self.decided(self.decide(request), context: context)
    }

    private func decided(_ decision: HBONEDecision, context: ChannelHandlerContext) {
        guard self.state == .deciding else { return }
        switch decision {
        case .reject(let status, let reason):
            self.respond(status, reason: reason, context: context)
        case .forward(let upstream):
            self.state = .connecting
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let request = self.request
            let onClosed = self.onClosed
            let opened = self.opened
            let glue = TunnelGlue { counts in
                onClosed(HBONETunnelRecord(request: request, status: .ok, reason: nil, bytes: counts, duration: opened.duration(to: .now)))
            }
            let tcpSide = NIOLoopBound(glue.tcp, eventLoop: context.eventLoop)
            let boundGlue = NIOLoopBound(glue, eventLoop: context.eventLoop)
            let configuration = self.configuration
            let bootstrap = ClientBootstrap(group: context.eventLoop)
                .connectTimeout(configuration.connectTimeout.timeAmount)
                .channelInitializer { channel in
                    // The pump's TCP side goes in before the connect completes: a first
                    // speaker's greeting and FIN can arrive before we answer 200, and NIO
                    // delivers an EOF even with autoRead off; the stream side keeps both.
                    channel.eventLoop.makeCompletedFuture {
                        try TunnelSocketOptions.applyToTCPSide(channel, configuration)
                        try channel.pipeline.syncOperations.addHandler(tcpSide.value)
                    }
                }
            bootstrap.connect(to: upstream, from: self.request?.peerAddress?.ip, sockets: self.upstreamSockets, on: context.eventLoop)
                .whenComplete { result in
                    let (handler, context) = loopBound.value
                    switch result {
                    case .success(let channel):
                        handler.connected(upstream: channel, glue: boundGlue.value, context: context)
                    case .failure(let error):
                        boundGlue.value.abandon()
                        handler.respond(.serviceUnavailable, reason: "connection failed: \(error)", context: context)
                    }
                }
        }
    }

    private func connected(upstream: any Channel, glue: TunnelGlue, context: ChannelHandlerContext) {
        guard self.state == .connecting, context.channel.isActive else {
            glue.abandon()
            upstream.close(promise: nil)
            return
        }
        self.state = .spliced
        var headers = HPACKHeaders()
        headers.add(name: ":status", value: "200")
        context.writeAndFlush(Self.wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        do {
            try context.pipeline.syncOperations.addHandler(glue.stream, position: .after(self))
        } catch {
            glue.abandon()
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        if let request = self.request { self.live.add(request, context.channel) }
        let early = self.early
        self.early = []
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
        for payload in early { glue.stream.channelReadDelivered(payload) }
        glue.tcp.flush()
        TunnelSocketOptions.setAutoRead(upstream, true)
        // This handler is out of the pipeline: the read goes from the channel, and delivers
        // what waited unread to the glue.
        TunnelSocketOptions.setAutoRead(context.channel, true)
        context.channel.read()
    }

    /// Ends the stream with an error status, once: a stream the client already closed
    /// (``channelInactive(context:)`` recorded it) is not answered or recorded again when
    /// its upstream connect fails afterwards.
    private func respond(_ status: HBONEStatus, reason: String, context: ChannelHandlerContext) {
        guard self.state != .done else { return }
        self.state = .done
        self.logger.debug("HBONE request rejected", metadata: ["status": "\(status)", "reason": "\(reason)"])
        var headers = HPACKHeaders()
        headers.add(name: ":status", value: "\(status.code)")
        context.write(Self.wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
        // RFC 9113 §8.1: "A server can send a complete response prior to the client
        // sending an entire request ... the server MAY request that the client abort
        // transmission of a request without error by sending a RST_STREAM with an error
        // code of NO_ERROR after sending a complete response", as hyper's h2 (ztunnel)
        // does. Nothing more of the stream is read; the reset ends it.
        context.writeAndFlush(Self.wrapOutboundOut(.rstStream(.noError)), promise: nil)
        self.onClosed(HBONETunnelRecord(request: self.request, status: status, reason: reason, bytes: TunnelByteCounts(), duration: self.opened.duration(to: .now)))
    }
}
