internal import NIOCore
internal import NIOHTTP2

/// Sits between `NIOSSLHandler` and `NIOHTTP2Handler` on an HBONE connection and does the
/// I/O for ``InboundDataSplicer``: forwards bytes to nio-http2, hands spliced streams' DATA
/// payloads to their tunnels' TCP sides, and writes the WINDOW_UPDATE frames that return
/// those bytes to the sender. Only does I/O; the rules are the splicer's.
final class InboundDataSplicerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: InboundDataSplicer
    private var sinks: [Int32: TunnelGlue.StreamSide] = [:]
    private var context: ChannelHandlerContext?

    init(role: InboundDataSplicer.Role, configuration: HBONEConfiguration) {
        self.machine = InboundDataSplicer(
            role: role, streamWindow: configuration.http2.streamWindow,
            connectionWindow: configuration.http2.connectionWindow,
            maximumFrameSize: configuration.http2.maximumFrameSize
        )
    }

    /// The handler of a stream channel's connection, if the connection has one.
    static func of(stream: any Channel) -> InboundDataSplicerHandler? {
        try? stream.parent?.pipeline.syncOperations.handler(type: InboundDataSplicerHandler.self)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.sinks = [:]
    }

    /// Takes `streamID`'s DATA to `sink` from now on; false if it cannot (see
    /// ``InboundDataSplicer/register(_:)``), and the stream keeps going through nio-http2.
    func register(_ streamID: Int32, sink: TunnelGlue.StreamSide) -> Bool {
        guard self.context != nil, self.machine.register(streamID) else { return false }
        self.sinks[streamID] = sink
        return true
    }

    /// The stream's channel closed.
    func forget(_ streamID: Int32) {
        guard self.sinks.removeValue(forKey: streamID) != nil || self.machine.isSpliced(streamID) else { return }
        self.send(self.machine.forget(streamID))
    }

    /// The stream's TCP side can take bytes again.
    func becameWritable(_ streamID: Int32) {
        self.send(self.machine.becameWritable(streamID))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = Self.unwrapInboundIn(data)
        while let action = self.machine.next(&input) {
            switch action {
            case .forward(let bytes):
                context.fireChannelRead(Self.wrapInboundOut(bytes))
            case .deliver(let streamID, let bytes):
                self.sinks[streamID]?.spliceRead(bytes)
            case .connectionError(let code, let lastStreamID):
                var frame = context.channel.allocator.buffer(capacity: 17)
                Self.writeFrameHeader(length: 8, type: 0x7, streamID: 0, into: &frame)
                frame.writeInteger(UInt32(bitPattern: lastStreamID))
                frame.writeInteger(code)
                context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
                let error: any Error = code == InboundDataSplicer.flowControlError
                    ? NIOHTTP2Errors.flowControlViolation() : NIOHTTP2Errors.unableToParseFrame()
                context.fireErrorCaught(error)
                context.close(promise: nil)
                return
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Flushing can call back in (a TCP side turning writable), so it happens before,
        // not inside, the machine's bookkeeping.
        for streamID in self.machine.touchedStreams { self.sinks[streamID]?.spliceReadComplete() }
        let sinks = self.sinks
        let updates = self.machine.readComplete { streamID in sinks[streamID]?.partnerIsWritable ?? true }
        self.send(updates)
        context.fireChannelReadComplete()
    }

    /// Written below nio-http2, so between its frames: it writes each frame (header, then
    /// payload) within one call, and nothing here runs inside such a call — updates are
    /// sent from this handler's own inbound events and from TCP sides' writability changes.
    private func send(_ updates: InboundDataSplicer.WindowUpdates) {
        guard !updates.isEmpty, let context = self.context else { return }
        var frames = context.channel.allocator.buffer(capacity: 13 * updates.count)
        for (streamID, increment) in updates {
            Self.writeFrameHeader(length: 4, type: 0x8, streamID: streamID, into: &frames)
            frames.writeInteger(increment)
        }
        context.writeAndFlush(Self.wrapOutboundOut(frames), promise: nil)
    }

    private static func writeFrameHeader(length: Int, type: UInt8, streamID: Int32, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(length >> 8))
        buffer.writeInteger(UInt8(length & 0xff))
        buffer.writeInteger(type)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(bitPattern: streamID))
    }
}
