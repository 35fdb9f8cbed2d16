internal import NIOCore

/// Splices two TCP channels on one event loop (plain TCP to a non-mesh destination or to
/// the local app): bytes both ways, FIN propagated as `shutdown(SHUT_WR)` after the bytes
/// before it, reads gated on the partner's writability, both closed when both directions
/// are done or either fails. The channels must have `autoRead` off and
/// `allowRemoteHalfClosure` on.
///
/// A side is shut or closed only once the writes it was given have left: NIO turns a
/// half-close of a socket whose other half is already shut into a full close, and a full
/// close drops writes still pending in the channel (a response that arrived with the
/// upstream's FIN, for a client that already sent its own). Only an error closes at once.
final class TCPRelay {
    final class Side: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        /// Strong: the pipelines own the sides and the sides keep the relay alive until it
        /// finishes, which breaks the cycle.
        var relay: TCPRelay?
        var partner: Side?
        var context: ChannelHandlerContext?
        var inputDone = false
        var pendingRead = false
        let isClient: Bool

        init(isClient: Bool) { self.isClient = isClient }

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = Self.unwrapInboundIn(data)
            self.relay?.count(buffer.readableBytes, fromClient: self.isClient)
            self.partner?.context?.write(Self.wrapOutboundOut(buffer), promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            self.partner?.context?.flush()
            self.readIfPartnerWritable()
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable { self.partner?.readIfPartnerWritable() }
            context.fireChannelWritabilityChanged()
        }

        func readIfPartnerWritable() {
            guard !self.inputDone, let context = self.context else { return }
            if self.partner?.context?.channel.isWritable ?? false { context.read() }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                self.inputDone = true
                // Everything read before the FIN was written to the partner already; its
                // output is shut once those writes are done.
                self.partner?.afterPendingWrites(close: .output)
                self.relay?.directionDone()
                return
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            // Closed without an error first: the other side still gets what it was given.
            self.relay?.finish(graceful: true)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.relay?.finish(graceful: false)
        }

        func afterPendingWrites(close mode: CloseMode, deadline: TimeAmount? = nil) {
            self.context?.close(mode, afterPendingWrites: deadline)
        }
    }

    let client = Side(isClient: true)
    let upstream = Side(isClient: false)
    private var counts = TunnelByteCounts()
    private var done = 0
    private var finished = false
    private let onClose: (TunnelByteCounts) -> Void
    private let closeDeadline: TimeAmount

    /// `closeDeadline` bounds the final close's wait for pending writes: a write error
    /// shows as the other side going inactive, and its peer may neither read nor close.
    init(closeDeadline: TimeAmount = .seconds(5), onClose: @escaping (TunnelByteCounts) -> Void) {
        self.closeDeadline = closeDeadline
        self.onClose = onClose
        self.client.relay = self
        self.upstream.relay = self
        self.client.partner = self.upstream
        self.upstream.partner = self.client
    }

    func count(_ bytes: Int, fromClient: Bool) {
        if fromClient { self.counts.sent += bytes } else { self.counts.received += bytes }
    }

    /// Starts reading on both sides once both handlers are in their pipelines.
    func start() {
        self.client.readIfPartnerWritable()
        self.upstream.readIfPartnerWritable()
    }

    func directionDone() {
        self.done += 1
        if self.done == 2 { self.finish(graceful: true) }
    }

    /// Closes both sides: after their pending writes when `graceful`, else at once (an error).
    func finish(graceful: Bool) {
        guard !self.finished else { return }
        self.finished = true
        if graceful {
            self.client.afterPendingWrites(close: .all, deadline: self.closeDeadline)
            self.upstream.afterPendingWrites(close: .all, deadline: self.closeDeadline)
        } else {
            self.client.context?.channel.close(promise: nil)
            self.upstream.context?.channel.close(promise: nil)
        }
        self.client.partner = nil
        self.upstream.partner = nil
        self.client.relay = nil
        self.upstream.relay = nil
        self.onClose(self.counts)
    }
}
