public import MeshIdentity
internal import NIOCore
internal import NIOHTTP2
internal import NIOPosix

/// One established HBONE tunnel as an async byte stream: what a Swift program uses when it
/// is itself the endpoint (a test client, a health checker, a waypoint), rather than
/// splicing a socket through ``HBONEForwarder``.
///
/// Use it inside ``executeThenClose(_:)``, which closes the stream when the body returns:
/// ```swift
/// let tunnel = try await client.connect(to: nextHop, authority: destination, expecting: [serverID], as: myID)
/// try await tunnel.executeThenClose { inbound, outbound in
///     try await outbound.write(Array("ping".utf8))
///     outbound.finish()                        // END_STREAM: our half-close
///     for try await chunk in inbound { … }     // until the server's END_STREAM
/// }
/// ```
/// Reads apply back-pressure: while the body does not consume `inbound`, no HTTP/2 window
/// updates are sent and the server stops sending (RFC 9113 §5.2).
public struct HBONETunnel: Sendable {
    private let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>

    init(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) {
        self.channel = channel
    }

    /// Bytes from the server, as they arrive; ends at the server's END_STREAM.
    public struct Inbound: AsyncSequence, Sendable {
        public typealias Element = [UInt8]
        fileprivate let stream: NIOAsyncChannelInboundStream<ByteBuffer>

        public struct AsyncIterator: AsyncIteratorProtocol {
            fileprivate var base: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator

            public mutating func next() async throws -> [UInt8]? {
                guard let buffer = try await self.base.next() else { return nil }
                return Array(buffer.readableBytesView)
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(base: self.stream.makeAsyncIterator())
        }
    }

    /// Writes bytes to the server; ``finish()`` half-closes (END_STREAM).
    public struct Outbound: Sendable {
        fileprivate let writer: NIOAsyncChannelOutboundWriter<ByteBuffer>

        /// Writes `bytes` as DATA; suspends while the stream's send buffer is above its
        /// high watermark.
        public func write(_ bytes: some Sequence<UInt8>) async throws {
            try await self.writer.write(ByteBuffer(bytes: bytes))
        }

        /// Sends END_STREAM: we send nothing more, and can still read.
        public func finish() {
            self.writer.finish()
        }
    }

    /// Runs `body` with the tunnel's two directions, then closes the stream (in order if
    /// both sides ended their halves, with RST_STREAM(CANCEL) otherwise).
    public func executeThenClose<Result: Sendable>(
        _ body: (_ inbound: Inbound, _ outbound: Outbound) async throws -> Result
    ) async throws -> Result {
        try await self.channel.executeThenClose { inbound, outbound in
            try await body(Inbound(stream: inbound), Outbound(writer: outbound))
        }
    }
}

extension HBONEClient {
    /// Opens a tunnel to `authority` through the HBONE endpoint `nextHop`, presenting
    /// `source`'s certificate and accepting the server only if it proves one of `expecting`.
    ///
    /// Completes once the server answered `200`; throws ``HBONEClientError`` otherwise
    /// (`.status(401)` for a policy denial, `.status(503)` when the server could not reach
    /// the destination, `.handshake` for a TLS or identity failure).
    public func connect(
        to nextHop: HBONEAddress, authority: HBONEAddress, expecting: [SPIFFEID], as source: SPIFFEID,
        metadata: HBONERequestMetadata = HBONERequestMetadata()
    ) async throws -> HBONETunnel {
        try await self.connect(HBONETunnelTarget(
            source: source, nextHop: nextHop, expectedIdentities: expecting, authority: authority, metadata: metadata
        ))
    }

    /// Opens a tunnel for `target`; see ``connect(to:authority:expecting:as:metadata:)``.
    public func connect(_ target: HBONETunnelTarget) async throws -> HBONETunnel {
        try await self.connect(target, on: MultiThreadedEventLoopGroup.singleton.any())
    }

    /// Opens a tunnel on a given event loop (the pool keeps connections per loop).
    func connect(_ target: HBONETunnelTarget, on loop: any EventLoop) async throws -> HBONETunnel {
        // The codec goes in on the event-loop turn that took the client handler out, so
        // frames that a reset right after the 200 flushes into the pipeline are not lost.
        try await self.openStream(target, on: loop).flatMapThrowing { opened in
            // Reset (or its connection lost) in the read burst of its 200, or closed by now:
            // not a tunnel.
            guard !opened.closed, opened.channel.isActive else { throw HBONEClientError.closed }
            let stream = opened.channel
            let codec = StreamByteCodec()
            try stream.pipeline.syncOperations.addHandler(codec)
            let channel = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                wrappingChannelSynchronously: stream,
                configuration: .init(isOutboundHalfClosureEnabled: true)
            )
            codec.replay(opened.early)
            // Reads were paused while the CONNECT was answered; turning autoRead back on
            // does not issue a read by itself on a stream channel.
            TunnelSocketOptions.setAutoRead(stream, true)
            stream.read()
            return HBONETunnel(channel)
        }.get()
    }
}

/// DATA frames ⇄ bytes for ``HBONETunnel``: END_STREAM in is `inputClosed`, and an output
/// half-close is an empty DATA frame with END_STREAM (RFC 9113 §8.5).
final class StreamByteCodec: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private var context: ChannelHandlerContext?
    private var inputClosed = false
    private var failed = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Delivers frames that were read before this handler existed.
    func replay(_ frames: [HTTP2Frame.FramePayload]) {
        guard let context = self.context, !frames.isEmpty else { return }
        for frame in frames { self.deliver(frame, context: context) }
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.deliver(Self.unwrapInboundIn(data), context: context)
    }

    private func deliver(_ payload: HTTP2Frame.FramePayload, context: ChannelHandlerContext) {
        switch payload {
        case .data(let data):
            if case .byteBuffer(let buffer) = data.data, buffer.readableBytes > 0 {
                context.fireChannelRead(Self.wrapInboundOut(buffer))
            }
            if data.endStream { self.closeInput(context: context) }
        case .headers(let headers):
            if headers.endStream { self.closeInput(context: context) }
        default:
            break
        }
    }

    /// RFC 9113 §8.1: a server that has sent its complete response "MAY request that the
    /// client abort transmission of a request without error by sending a RST_STREAM with an
    /// error code of NO_ERROR". That ends the tunnel's input in order; other resets are
    /// errors.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let closed = error as? NIOHTTP2Errors.StreamClosed, closed.errorCode == .noError {
            self.closeInput(context: context)
            return
        }
        self.failed = true
        context.fireErrorCaught(error)
    }

    /// A stream ends with END_STREAM or RST_STREAM (RFC 9113 §5.1). Gone without either
    /// reaching this handler (its connection lost, or closed before the tunnel took it
    /// over), it did not end cleanly: the tunnel's reader gets an error, not an EOF.
    func channelInactive(context: ChannelHandlerContext) {
        if !self.inputClosed, !self.failed {
            self.failed = true
            context.fireErrorCaught(HBONEClientError.closed)
        }
        context.fireChannelInactive()
    }

    private func closeInput(context: ChannelHandlerContext) {
        guard !self.inputClosed else { return }
        self.inputClosed = true
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = Self.unwrapOutboundIn(data)
        context.write(Self.wrapOutboundOut(.data(.init(data: .byteBuffer(buffer)))), promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .output {
            let endStream = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))
            context.writeAndFlush(Self.wrapOutboundOut(endStream), promise: promise)
        } else {
            context.close(mode: mode, promise: promise)
        }
    }
}
