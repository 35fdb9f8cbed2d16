internal import NIOCore
internal import NIOHTTP2

/// Bytes moved through one tunnel, per direction.
public struct TunnelByteCounts: Sendable, Hashable {
    /// Bytes read from the plain TCP side and written into the tunnel.
    public var sent: Int = 0
    /// Bytes read from the tunnel and written to the plain TCP side.
    public var received: Int = 0

    /// Zero counts.
    public init() {}
}

/// Splices a plain TCP channel and an HTTP/2 stream channel into one byte pipe
/// (ztunnel `src/copy.rs` `copy_bidirectional`).
///
/// - Half-close is propagated both ways: TCP EOF (FIN) becomes an empty DATA frame with
///   END_STREAM; END_STREAM becomes `shutdown(SHUT_WR)` on the TCP socket once every
///   earlier byte is written (RFC 9113 §8.5: "a TCP connection … half-closed … END_STREAM").
/// - A reset stream or a TCP error is not propagated as a reset: the other side is shut
///   down in order, as ztunnel does.
/// - Back-pressure is end to end: a side is read only while its partner is writable, so a
///   slow reader stops the writer's reads (and, on the stream side, the HTTP/2 window
///   updates that depend on them) instead of growing buffers.
/// - When both directions finished in order (FIN and END_STREAM each way), the TCP socket
///   is closed and the stream is left to close itself: it already is closed at the HTTP/2
///   level, or will be once our END_STREAM leaves the flow-control buffer. Closing the
///   stream channel early would send RST_STREAM and drop that buffered tail, and a burst
///   of short tunnels would trip the peer's reset-flood limit (nio-http2 allows 200 resets
///   per 30 s before GOAWAY ENHANCE_YOUR_CALM). Only an abort (TCP error, stream reset,
///   connection loss) closes the stream channel, which resets the stream.
/// - `onClose` gets the byte counts when both directions are finished.
///
/// The two handlers live on channels of the same event loop (a stream channel shares
/// its parent's loop, and the TCP side is created on it), so partners call each other
/// directly. The sides keep the glue alive (the pipelines own the sides); the glue lets
/// go of them when the tunnel is finished, which breaks the reference cycle.
final class TunnelGlue {
    let tcp: TCPSide
    let stream: StreamSide
    private var counts = TunnelByteCounts()
    private var tcpToStreamDone = false
    private var streamToTCPDone = false
    private var closed = false
    private let onClose: (TunnelByteCounts) -> Void

    /// The TCP side's final close waits for its pending writes without a deadline (unlike
    /// ``TCPRelay``'s): a scheduled task per tunnel cost 12 mallocs per pooled stream, over
    /// the malloc guard. A peer that neither reads nor closes keeps its socket until it does.
    init(onClose: @escaping (TunnelByteCounts) -> Void) {
        self.onClose = onClose
        self.tcp = TCPSide()
        self.stream = StreamSide()
        self.tcp.glue = self
        self.stream.glue = self
    }

    /// The tunnel never came up (upstream connect failed, stream gone first): no record,
    /// and the sides let go of the glue.
    func abandon() {
        self.closed = true
        self.tcp.glue = nil
        self.stream.glue = nil
    }

    // MARK: Events from the sides

    fileprivate func tcpRead(_ buffer: ByteBuffer) {
        self.counts.sent += buffer.readableBytes
        self.stream.write(.data(.init(data: .byteBuffer(buffer))))
    }

    fileprivate func tcpEOF() {
        guard !self.tcpToStreamDone else { return }
        self.tcpToStreamDone = true
        self.stream.write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), flush: true)
        self.closeIfDone(abort: false)
    }

    fileprivate func streamRead(_ buffer: ByteBuffer) {
        self.counts.received += buffer.readableBytes
        self.tcp.write(buffer)
    }

    fileprivate func streamEOF() {
        guard !self.streamToTCPDone else { return }
        self.streamToTCPDone = true
        self.tcp.shutdownOutput()
        self.closeIfDone(abort: false)
    }

    /// The stream went away (RST_STREAM, connection loss): no more data can flow either way.
    fileprivate func streamGone() {
        let orderly = self.streamToTCPDone && self.tcpToStreamDone
        self.streamEOF()
        self.tcpToStreamDone = true
        self.closeIfDone(abort: !orderly)
    }

    /// The TCP side failed or closed entirely.
    fileprivate func tcpGone() {
        let wasOpen = !self.streamToTCPDone
        self.tcpEOF()
        self.streamToTCPDone = true
        self.closeIfDone(abort: wasOpen)
    }

    private func closeIfDone(abort: Bool) {
        guard self.tcpToStreamDone, self.streamToTCPDone else { return }
        if abort { self.stream.close() }
        guard !self.closed else { return }
        self.closed = true
        self.tcp.closeAfterPendingWrites()
        self.onClose(self.counts)
        self.tcp.glue = nil
        self.stream.glue = nil
    }

    /// Read gating shared by both sides: a side is read only while its partner is writable.
    fileprivate struct ReadGate {
        private var pendingRead = false

        /// Called from `read(context:)`: returns whether to pass the read on now.
        mutating func shouldRead(partnerWritable: Bool) -> Bool {
            if partnerWritable { return true }
            self.pendingRead = true
            return false
        }

        /// The partner became writable: returns whether a held read must be issued.
        mutating func partnerBecameWritable() -> Bool {
            defer { self.pendingRead = false }
            return self.pendingRead
        }
    }

    /// The plain TCP side (application socket or upstream socket).
    final class TCPSide: ChannelDuplexHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        fileprivate var glue: TunnelGlue?
        fileprivate var context: ChannelHandlerContext?
        private var gate = ReadGate()
        private var outputShut = false

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

        func read(context: ChannelHandlerContext) {
            if self.gate.shouldRead(partnerWritable: self.glue?.stream.isWritable ?? true) { context.read() }
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable { self.glue?.stream.resumeReading() }
            context.fireChannelWritabilityChanged()
        }

        fileprivate var isWritable: Bool { self.context?.channel.isWritable ?? true }

        /// The stream side may have become writable: a held read is issued only if it
        /// really is (its channel writable and nothing of ours waiting in the splicer for
        /// window); a writability change of the stream channel alone, which follows the
        /// shared connection's, must not admit another read burst into the splicer's queue.
        fileprivate func resumeReading() {
            guard self.glue?.stream.isWritable ?? true else { return }
            if self.gate.partnerBecameWritable() { self.context?.read() }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.glue?.tcpRead(Self.unwrapInboundIn(data))
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            self.glue?.stream.flush()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event {
                self.glue?.tcpEOF()
            } else {
                context.fireUserInboundEventTriggered(event)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.glue?.tcpGone()
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // ECONNRESET, EPIPE and friends end the connection like EOF (ztunnel swallows them).
            context.close(promise: nil)
        }

        fileprivate func write(_ buffer: ByteBuffer) {
            guard let context = self.context, !self.outputShut else { return }
            // NIOAny built here, for the concrete type: `wrapOutboundOut` is not specialized.
            context.write(NIOAny(buffer), promise: nil)
        }

        /// Flushed once per read burst of the stream side, not per DATA frame.
        func flush() {
            self.context?.flush()
        }

        fileprivate func shutdownOutput() {
            guard let context = self.context, !self.outputShut else { return }
            self.outputShut = true
            // The FIN goes out after every byte before it.
            context.close(.output, afterPendingWrites: nil)
        }

        fileprivate func closeAfterPendingWrites() {
            self.context?.close(.all, afterPendingWrites: nil)
        }
    }

    /// The HTTP/2 stream side (one CONNECT stream).
    final class StreamSide: ChannelDuplexHandler {
        typealias InboundIn = HTTP2Frame.FramePayload
        typealias OutboundIn = HTTP2Frame.FramePayload
        typealias OutboundOut = HTTP2Frame.FramePayload

        fileprivate var glue: TunnelGlue?
        fileprivate var context: ChannelHandlerContext?
        private var gate = ReadGate()
        private var endStreamSent = false
        /// Frames written before the stream existed (the TCP side is attached first, so bytes
        /// and a FIN that arrive while the tunnel is being set up are kept, not dropped).
        private var pending: [HTTP2Frame.FramePayload] = []

        /// The connection's splicer while it takes this stream's DATA in either direction
        /// (see ``InboundDataSplicer`` and ``OutboundDataSplicer``), and the stream's ID there.
        private var splicer: DataSplicerHandler?
        private var streamID: Int32 = 0
        /// Our DATA goes through the splicer, not the stream channel.
        private var splicesOutbound = false
        /// END_STREAM waits until the splicer has written every queued byte.
        private var endStreamWaits = false
        /// Bytes of ours wait in the splicer for window (the TCP side is not read meanwhile).
        private var waitingInSplicer = false

        func handlerAdded(context: ChannelHandlerContext) {
            self.context = context
            // Added before any DATA of the stream was read, or right after the ones that
            // came with the answer, and after our HEADERS were written: from here the
            // connection's splicer may take its DATA both ways.
            if self.glue != nil, let splicer = DataSplicerHandler.of(stream: context.channel),
                let id = try? context.channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)
            {
                let registered = splicer.register(Int32(Int(id)), sink: self)
                if registered.inbound || registered.outbound {
                    self.splicer = splicer
                    self.streamID = Int32(Int(id))
                    self.splicesOutbound = registered.outbound
                }
            }
            let pending = self.pending
            self.pending = []
            for payload in pending { self.emit(payload, flush: false) }
            self.flush()
            if self.glue == nil {
                context.close(promise: nil)
            }
        }
        func handlerRemoved(context: ChannelHandlerContext) {
            self.context = nil
            self.unsplice()
        }

        private func unsplice() {
            self.splicer?.forget(self.streamID)
            self.splicer = nil
            self.splicesOutbound = false
            self.waitingInSplicer = false
            self.endStreamWaits = false
        }

        /// The stream closed in the read burst of its 200, before this side was attached
        /// (after the early frames were replayed): it ends as on `channelInactive`.
        func closedBeforeAttached() {
            self.unsplice()
            self.glue?.streamGone()
        }

        /// A DATA payload the splicer took for this stream.
        func spliceRead(_ buffer: ByteBuffer) {
            if buffer.readableBytes > 0 { self.glue?.streamRead(buffer) }
        }

        /// The splicer's read burst ended.
        func spliceReadComplete() {
            self.glue?.tcp.flush()
        }

        /// Whether the TCP side takes more bytes (the splicer returns window only then).
        var partnerIsWritable: Bool { self.glue?.tcp.isWritable ?? true }

        /// The splicer wrote every byte it had queued for this stream.
        func spliceDrained() {
            self.waitingInSplicer = false
            if self.endStreamWaits, let context = self.context {
                self.endStreamWaits = false
                Self.sendEndStream(context)
            }
            self.glue?.tcp.resumeReading()
        }

        /// The splicer found a stream error (RFC 9113 §6.9.1, the peer pushed the stream's
        /// window above 2^31−1): the stream leaves the splicer and is reset through nio-http2
        /// (RST_STREAM with `code`); its channel then closes and the tunnel with it.
        func resetStream(code: UInt32) {
            guard let context = self.context else { return }
            self.unsplice()
            self.endStreamSent = true
            context.writeAndFlush(Self.wrapOutboundOut(.rstStream(HTTP2ErrorCode(networkCode: Int(code)))), promise: nil)
        }

        func read(context: ChannelHandlerContext) {
            if self.gate.shouldRead(partnerWritable: self.glue?.tcp.isWritable ?? true) { context.read() }
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable { self.glue?.tcp.resumeReading() }
            context.fireChannelWritabilityChanged()
        }

        /// Takes more bytes from the TCP side: the channel is writable (which follows the
        /// connection's), and nothing waits in the splicer for window.
        fileprivate var isWritable: Bool {
            guard let context = self.context else { return true }
            if self.waitingInSplicer { return false }
            return context.channel.isWritable
        }

        fileprivate func resumeReading() {
            if self.gate.partnerBecameWritable() { self.context?.read() }
            self.splicer?.becameWritable(self.streamID)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.channelReadDelivered(Self.unwrapInboundIn(data))
        }

        /// Handles one inbound frame (also used to replay frames that arrived before the splice).
        func channelReadDelivered(_ payload: HTTP2Frame.FramePayload) {
            switch payload {
            case .data(let data):
                if case .byteBuffer(let buffer) = data.data, buffer.readableBytes > 0 {
                    self.glue?.streamRead(buffer)
                }
                if data.endStream { self.glue?.streamEOF() }
            case .headers(let headers):
                // Trailers end the stream; nothing else is expected after the 200.
                if headers.endStream { self.glue?.streamEOF() }
            default:
                break
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            self.glue?.tcp.flush()
            context.fireChannelReadComplete()
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.unsplice()
            self.glue?.streamGone()
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A stream error (RST_STREAM from the peer) ends the tunnel in order, like EOF.
            self.glue?.streamGone()
        }

        fileprivate func write(_ payload: HTTP2Frame.FramePayload, flush: Bool = false) {
            guard !self.endStreamSent else { return }
            if case .data(let data) = payload, data.endStream { self.endStreamSent = true }
            guard self.context != nil else {
                self.pending.append(payload)
                return
            }
            self.emit(payload, flush: flush)
        }

        private func emit(_ payload: HTTP2Frame.FramePayload, flush: Bool) {
            guard let context = self.context else { return }
            if self.splicesOutbound, let splicer = self.splicer, case .data(let data) = payload,
                case .byteBuffer(let bytes) = data.data
            {
                if bytes.readableBytes > 0, splicer.send(self.streamID, bytes) { self.waitingInSplicer = true }
                guard data.endStream else { return }
                // END_STREAM goes through nio-http2 (it keeps the stream's state), after the
                // bytes the splicer still holds.
                guard !self.waitingInSplicer else {
                    self.endStreamWaits = true
                    return
                }
                splicer.flush()
                Self.sendEndStream(context)
                return
            }
            context.write(Self.wrapOutboundOut(payload), promise: nil)
            if flush { context.flush() }
        }

        /// An empty DATA frame with END_STREAM, through nio-http2 (it keeps the stream's
        /// state), once the splicer holds no more bytes of the stream.
        private static func sendEndStream(_ context: ChannelHandlerContext) {
            context.writeAndFlush(Self.wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: nil)
        }

        fileprivate func flush() {
            if self.splicesOutbound, let splicer = self.splicer {
                splicer.flush()
            } else {
                self.context?.flush()
            }
        }

        fileprivate func close() {
            self.context?.close(promise: nil)
        }
    }
}
