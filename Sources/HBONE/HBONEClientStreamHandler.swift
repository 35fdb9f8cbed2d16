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
    private let connection: NIOLoopBound<PoolConnectionWatcher>
    private var answered = false

    /// `connection` says whether the server sent GOAWAY (on the same event loop).
    init(target: HBONETunnelTarget, response: EventLoopPromise<Void>, connection: NIOLoopBound<PoolConnectionWatcher>) {
        self.target = target
        self.response = response
        self.connection = connection
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
        if !self.connection.value.acceptsStreams {
            // The server's GOAWAY came after the checkout (nio-http2 would refuse the new
            // stream as a connection error, which reaches no stream, and the response would
            // never come), or the connection began to close. Nothing is sent; the pool
            // retries on another connection.
            self.answered = true
            self.response.fail(RequestNotProcessed())
            context.close(promise: nil)
            return
        }
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
            // A 200 that ends the stream (the server has nothing to send): its END_STREAM
            // is the tunnel's EOF, replayed with the rest.
            if headers.endStream { self.early.append(payload) }
        } else {
            self.response.fail(HBONEClientError.status(status))
            if headers.endStream {
                // The answer is complete (RFC 9113 §8.1): our side ends with END_STREAM, not
                // a reset, which a server counts against its reset limit (nio-http2: 200 in
                // 30 s, then GOAWAY for the whole connection and every tunnel on it). Ours
                // and hyper's follow the answer with RST_STREAM(NO_ERROR), which usually
                // closes the stream first; then nothing is sent.
                let end = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))
                context.writeAndFlush(Self.wrapOutboundOut(end), promise: nil)
            } else {
                context.close(promise: nil)
            }
        }
    }

    private var established = false
    private var reported = false
    /// The stream closed (a reset, the connection lost) in the read burst that carried its
    /// 200: whoever takes it over sees no `channelInactive` of its own.
    private(set) var closedAfterResponse = false

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.established, !self.reported {
            self.reported = true
            self.response.succeed()
        } else if !self.answered {
            // The read was spent on frames before the response (a stream WINDOW_UPDATE or
            // PRIORITY may come first): read on, or the response would wait unread.
            context.read()
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.established, !self.reported {
            self.reported = true
            self.closedAfterResponse = true
            self.response.succeed()
        }
        if !self.answered {
            self.answered = true
            self.response.fail(self.unanswered(HBONEClientError.closed, context: context))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.answered {
            self.answered = true
            self.response.fail(self.unanswered(error, context: context))
        }
        context.close(promise: nil)
    }

    /// Why the stream ended before its answer: `error`, unless the server's GOAWAY (which
    /// the connection's watcher reads before nio-http2 closes the streams it drops) says it
    /// never processed the stream.
    private func unanswered(_ error: any Error, context: ChannelHandlerContext) -> any Error {
        guard let id = try? context.channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID),
            !self.connection.value.processed(streamID: Int(id))
        else { return error }
        return RequestNotProcessed()
    }
}

/// A `CONNECT` the server did not process, so retrying it cannot repeat anything: not
/// sent (its connection had gone away), or above the last stream ID of the server's
/// GOAWAY (RFC 9113 §6.8: "streams ... with identifiers higher than the included last
/// stream identifier ... were not processed"; nio-http2 ends those with CANCEL).
struct RequestNotProcessed: Error {}

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

/// When a client connection closes on its own (RFC 9113 §6.8): after the server's GOAWAY
/// it takes no new streams, and once the last stream it carries has ended it is closed,
/// as hyper's client does, instead of idling until the server closes it. A value type:
/// the watcher feeds it events and performs what it returns.
struct ClientConnectionLifecycle: Sendable {
    private(set) var streams = 0
    private(set) var goneAway = false
    private var lastStreamID = Int(Int32.max)
    private var closing = false

    /// A stream was opened on the connection.
    mutating func streamOpened() { self.streams += 1 }

    /// A stream ended. Returns whether the connection should close now.
    mutating func streamClosed() -> Bool {
        self.streams = max(0, self.streams - 1)
        return self.closeIfDone()
    }

    /// The server sent GOAWAY naming `lastStreamID`. Returns whether the connection should
    /// close now.
    mutating func goAwayReceived(lastStreamID: Int = Int(Int32.max)) -> Bool {
        self.goneAway = true
        // §6.8: "Endpoints MUST NOT increase the value they send in the last stream identifier".
        self.lastStreamID = min(self.lastStreamID, lastStreamID)
        return self.closeIfDone()
    }

    /// Whether the server may have processed `streamID`: not when a GOAWAY named a lower
    /// last stream ID (RFC 9113 §6.8).
    func processed(streamID: Int) -> Bool { streamID <= self.lastStreamID }

    /// The pool closes the connection (idle eviction). Returns whether it is not closing yet.
    mutating func closeRequested() -> Bool {
        defer { self.closing = true }
        return !self.closing
    }

    /// A close began, ours or another's (keepalive, an error GOAWAY, TLS, the peer).
    /// Returns whether the connection took new streams until now.
    mutating func closeStarted() -> Bool {
        defer { self.closing = true }
        return self.acceptsStreams
    }

    /// Whether a new stream may go on the connection: not after the server's GOAWAY, nor
    /// once a close has begun.
    var acceptsStreams: Bool { !self.goneAway && !self.closing }

    private mutating func closeIfDone() -> Bool {
        guard self.goneAway, self.streams == 0, !self.closing else { return false }
        self.closing = true
        return true
    }
}

/// Tells the pool what a server's connection-level frames mean for a client connection:
/// GOAWAY takes it out of the pool, and SETTINGS_MAX_CONCURRENT_STREAMS caps the streams
/// it is given (RFC 9113 §5.1.2: "Endpoints MUST NOT exceed the limit set by their peer").
/// It counts the connection's streams and closes it once it has gone away and the last
/// one ended (``ClientConnectionLifecycle``); every close it makes is preceded by a
/// GOAWAY of its own (§6.8: "Endpoints SHOULD always send a GOAWAY frame before closing a
/// connection"). It sits after nio-http2, which the spliced data path does not reach.
final class PoolConnectionWatcher: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let onRetired: @Sendable () -> Void
    private let onMaximumStreams: @Sendable (Int) -> Void
    private let closeDeadline: TimeAmount
    private var lifecycle = ClientConnectionLifecycle()
    private var context: ChannelHandlerContext?

    /// `onRetired` takes the connection out of the pool, on the server's GOAWAY (streams
    /// already open keep running: nio-http2 serves those below its last stream ID) and as
    /// soon as a close begins. `onMaximumStreams` gets
    /// each advertised stream limit. A close waits at most `closeDeadline` for what was
    /// written before it.
    init(
        closeDeadline: TimeAmount,
        onRetired: @escaping @Sendable () -> Void, onMaximumStreams: @escaping @Sendable (Int) -> Void
    ) {
        self.closeDeadline = closeDeadline
        self.onRetired = onRetired
        self.onMaximumStreams = onMaximumStreams
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Whether the connection takes new streams (no GOAWAY from the server, no close begun).
    var acceptsStreams: Bool { self.lifecycle.acceptsStreams }

    /// Whether the server may have processed `streamID` (no GOAWAY below it).
    func processed(streamID: Int) -> Bool { self.lifecycle.processed(streamID: streamID) }

    /// A close of the connection began, whoever made it (``ConnectionCloseObserver``, or
    /// the channel going inactive): the pool hands it out no more. TLS keeps the channel
    /// active while it waits for the peer's close_notify, and NIO completes the close
    /// future a loop turn after the channel went inactive.
    func closeStarted() {
        if self.lifecycle.closeStarted() { self.onRetired() }
    }

    /// A stream of this connection was created; call on the connection's event loop
    /// (stream channels share it).
    func streamOpened() { self.lifecycle.streamOpened() }

    /// A stream of this connection closed; call on the connection's event loop.
    func streamClosed() {
        if self.lifecycle.streamClosed() { self.close() }
    }

    /// Closes the connection with a GOAWAY first (the pool's idle eviction); call on the
    /// connection's event loop.
    func closeGracefully() {
        if self.lifecycle.closeRequested() { self.close() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data).payload {
        case .goAway(let lastStreamID, _, _):
            self.onRetired()
            if self.lifecycle.goAwayReceived(lastStreamID: Int(lastStreamID)) { self.close() }
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

    func channelInactive(context: ChannelHandlerContext) {
        self.closeStarted()
        context.fireChannelInactive()
    }

    private func close() {
        guard let context = self.context else { return }
        // The client opens every stream; it has processed none of the server's.
        let frame = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .rootStream, errorCode: .noError, opaqueData: nil))
        // Closed once the GOAWAY is written, and so everything before it: a last stream's
        // final DATA still queued (in the splicer, or in the socket's pending writes) is
        // not dropped by the close. Bounded by the drain deadline: DATA held for a window
        // the server never opens must not keep the connection.
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        let deadline = context.eventLoop.scheduleTask(in: self.closeDeadline) { channel.close(promise: nil) }
        written.futureResult.whenComplete { _ in
            deadline.cancel()
            channel.close(promise: nil)
        }
        context.writeAndFlush(Self.wrapOutboundOut(frame), promise: written)
    }
}

/// Sees every close of a client connection before TLS begins its shutdown, which keeps the
/// channel active for up to ``HBONETLS/shutdownTimeout`` while it waits for the peer's
/// close_notify: it sits directly above `NIOSSLHandler`, below the splicer, nio-http2 and
/// keepalive, so their closes (a dead peer, a GOAWAY for an error) and the pool's pass it.
/// Outbound only, so reads skip it.
final class ConnectionCloseObserver: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer

    private let watcher: PoolConnectionWatcher

    init(watcher: PoolConnectionWatcher) { self.watcher = watcher }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all { self.watcher.closeStarted() }
        context.close(mode: mode, promise: promise)
    }
}
