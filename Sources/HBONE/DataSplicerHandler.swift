internal import NIOCore
internal import NIOHTTP2

/// Sits between `NIOSSLHandler` and `NIOHTTP2Handler` on an HBONE connection and does the
/// I/O for ``InboundDataSplicer`` and ``OutboundDataSplicer``: hands spliced streams' DATA
/// payloads to their tunnels' TCP sides and frames their TCP sides' bytes as DATA, writes
/// the WINDOW_UPDATE frames that return received bytes to the sender, passes everything
/// else between TLS and nio-http2 — holding back those of nio-http2's frames that wait for
/// window. It also merges small writes into TLS records (``RecordCoalescing``; the
/// separate ``RecordCoalescer`` is left out when this handler is there). Only does I/O; the
/// rules are the splicers'.
final class DataSplicerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private var inbound: InboundDataSplicer
    private var outbound: OutboundDataSplicer
    private var sinks: [Int32: TunnelGlue.StreamSide] = [:]
    private var context: ChannelHandlerContext?
    /// The bytes of nio-http2's frames that wait (``OutboundDataSplicer/admitNio(_:into:)``),
    /// in order; a promise goes with the last piece of its write.
    private var held: [(data: IOData, promise: EventLoopPromise<Void>?)] = []
    /// An incomplete frame header at the end of nio-http2's last write, and its promise.
    private var incomplete: (bytes: ByteBuffer, promise: EventLoopPromise<Void>?)?
    private var runs: [OutboundDataSplicer.NioRun] = []
    /// Frames were written since the last flush.
    private var unflushed = false
    /// Bytes went on to nio-http2 in the current read burst.
    private var forwardedInBurst = false
    private var coalescing = RecordCoalescing()
    /// The outbound splicer's output, reused so its arrays are not allocated per message.
    private var output = OutboundDataSplicer.Output()
    /// Whether nio-http2 has sent a GOAWAY for an error (RFC 9113 §5.4.1).
    private var goAway: ErrorGoAwayWatch
    private var closing = false

    init(role: InboundDataSplicer.Role, configuration: HBONEConfiguration) {
        self.inbound = InboundDataSplicer(
            role: role, streamWindow: configuration.http2.streamWindow,
            connectionWindow: configuration.http2.connectionWindow,
            maximumFrameSize: configuration.http2.maximumFrameSize
        )
        self.outbound = OutboundDataSplicer(role: role)
        self.goAway = ErrorGoAwayWatch(role: role)
    }

    /// The handler of a stream channel's connection, if the connection has one.
    static func of(stream: any Channel) -> DataSplicerHandler? {
        try? stream.parent?.pipeline.syncOperations.handler(type: DataSplicerHandler.self)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.coalescing.take()?.promise?.fail(ChannelError.ioOnClosedChannel)
        self.sinks = [:]
        let held = self.held
        self.held.removeAll()
        for write in held { write.promise?.fail(ChannelError.ioOnClosedChannel) }
        self.incomplete?.promise?.fail(ChannelError.ioOnClosedChannel)
        self.incomplete = nil
    }

    // MARK: Streams

    /// Takes `streamID`'s DATA in each direction that can be (see
    /// ``InboundDataSplicer/register(_:)`` and ``OutboundDataSplicer/register(_:)``); a
    /// direction that cannot keeps going through nio-http2.
    func register(_ streamID: Int32, sink: TunnelGlue.StreamSide) -> (inbound: Bool, outbound: Bool) {
        guard self.context != nil else { return (false, false) }
        let registered = (inbound: self.inbound.register(streamID), outbound: self.outbound.register(streamID))
        if registered.inbound || registered.outbound { self.sinks[streamID] = sink }
        return registered
    }

    /// The stream's channel closed: bytes still queued for it are dropped.
    func forget(_ streamID: Int32) {
        self.outbound.forget(streamID)
        guard self.sinks.removeValue(forKey: streamID) != nil || self.inbound.isSpliced(streamID) else { return }
        self.send(self.inbound.forget(streamID))
    }

    /// The stream's TCP side can take bytes again.
    func becameWritable(_ streamID: Int32) {
        self.send(self.inbound.becameWritable(streamID))
    }

    /// Bytes from a spliced stream's TCP side; written as DATA now or when window allows.
    /// Returns whether bytes of the stream wait for window (the sink hears
    /// ``TunnelGlue/StreamSide/spliceDrained()`` when they are written).
    func send(_ streamID: Int32, _ bytes: ByteBuffer) -> Bool {
        self.output.reset()
        let waiting = self.outbound.send(streamID, bytes, into: &self.output)
        self.perform(self.output)
        return waiting
    }

    /// Flushes what was written.
    func flush() {
        guard self.unflushed, let context = self.context else { return }
        self.unflushed = false
        self.writeMerged(context: context)
        context.flush()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = Self.unwrapInboundIn(data)
        // Once a GOAWAY for an error is out (ours or nio-http2's, maybe for bytes forwarded
        // just now) the connection is closing: what the peer sends meanwhile is not parsed,
        // so no second GOAWAY goes out (RFC 9113 §6.8: its last stream ID must not grow).
        while !self.closing, self.goAway.errorCode == nil, let action = self.inbound.next(&input) {
            switch action {
            case .forward(let bytes):
                self.forward(bytes, context: context)
            case .deliver(let streamID, let bytes):
                self.sinks[streamID]?.spliceRead(bytes)
            case .windowUpdate(let streamID, let increment, var frame):
                // A local output: what is written here must be out before nio-http2 (which
                // may write in turn) sees the update.
                var output = OutboundDataSplicer.Output()
                let verdict = self.outbound.windowUpdate(streamID: streamID, increment: increment, into: &output)
                if case .connectionError(let code) = verdict { return self.connectionError(code: code, context: context) }
                self.perform(output)
                switch verdict {
                case .forward:
                    self.forward(frame, context: context)
                case .forwardIncrement(let smaller):
                    frame.setInteger(smaller, at: frame.readerIndex + InboundDataSplicer.frameHeaderLength)
                    self.forward(frame, context: context)
                case .streamError(let code):
                    self.sinks[streamID]?.resetStream(code: code)
                case .drop, .connectionError:
                    break
                }
            case .settings(let settings, let frame):
                var output = OutboundDataSplicer.Output()
                if let code = self.outbound.settings(settings, into: &output) {
                    return self.connectionError(code: code, context: context)
                }
                self.perform(output)
                self.forward(frame, context: context)
            case .connectionError(let code, _):
                return self.connectionError(code: code, context: context)
            }
        }
    }

    /// Every byte for nio-http2 goes through here: a read burst that forwarded nothing does
    /// not end a burst in nio-http2 (see `channelReadComplete`), which is only right while
    /// this is the one place that calls `fireChannelRead`.
    private func forward(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        self.forwardedInBurst = true
        // NIOAny built here, for the concrete type: `wrapInboundOut` is not specialized.
        context.fireChannelRead(NIOAny(bytes))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Flushing can call back in (a TCP side turning writable), so it happens before,
        // not inside, the machine's bookkeeping.
        for streamID in self.inbound.touchedStreams { self.sinks[streamID]?.spliceReadComplete() }
        let sinks = self.sinks
        let updates = self.inbound.readComplete { streamID in sinks[streamID]?.partnerIsWritable ?? true }
        self.send(updates)
        self.flush()
        // A burst that was all spliced DATA gave nio-http2 nothing to finish (no frames for
        // it or its stream channels), so it is not told of the burst's end.
        guard self.forwardedInBurst else { return }
        self.forwardedInBurst = false
        context.fireChannelReadComplete()
    }

    /// GOAWAY with `code` (RFC 9113 §5.4.1), then close.
    private func connectionError(code: UInt32, context: ChannelHandlerContext) {
        guard !self.closing, self.goAway.errorCode == nil else { return }
        self.closing = true
        var frame = context.channel.allocator.buffer(capacity: 17)
        HTTP2FrameHeader.write(length: 8, type: 0x7, flags: 0, streamID: 0, into: &frame)
        frame.writeInteger(UInt32(bitPattern: self.inbound.lastPeerStreamID))
        frame.writeInteger(code)
        self.emit(.byteBuffer(frame), context: context)
        self.flush(context: context)
        let error: any Error = code == InboundDataSplicer.flowControlError
            ? NIOHTTP2Errors.flowControlViolation() : NIOHTTP2Errors.unableToParseFrame()
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    /// Written below nio-http2, so between its frames: it writes each frame (header, then
    /// payload) within one call, and nothing here runs inside such a call — updates are
    /// sent from this handler's own inbound events and from TCP sides' writability changes.
    private func send(_ updates: InboundDataSplicer.WindowUpdates) {
        guard !updates.isEmpty, let context = self.context else { return }
        var frames = context.channel.allocator.buffer(capacity: 13 * updates.count)
        for (streamID, increment) in updates {
            HTTP2FrameHeader.write(length: 4, type: 0x8, flags: 0, streamID: streamID, into: &frames)
            frames.writeInteger(increment)
        }
        self.emit(.byteBuffer(frames), context: context)
        self.flush(context: context)
    }

    /// Writes spliced frames and tells the streams what changed. Frames are flushed by the
    /// caller (a TCP side's read burst) or at the end of this handler's read burst.
    private func perform(_ output: OutboundDataSplicer.Output) {
        guard !output.isEmpty, let context = self.context else { return }
        if output.nioRelease > 0 { self.writeHeld(output.nioRelease, context: context) }
        for frame in output.writes { self.emit(.byteBuffer(frame), context: context) }
        if !output.writes.isEmpty { self.unflushed = true }
        for streamID in output.drained { self.sinks[streamID]?.spliceDrained() }
    }

    // MARK: Outbound (nio-http2's writes)

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .fileRegion:
            // A DATA payload (nio-http2 passes payloads on as they came).
            let region = Self.unwrapOutboundIn(data)
            self.goAway.observe(count: region.readableBytes)
            if self.outbound.admitNioPayload(count: region.readableBytes) {
                self.held.append((region, promise))
            } else {
                self.emit(region, promise: promise, context: context)
            }
        case .byteBuffer(var buffer):
            self.goAway.observe(buffer)
            var promise = promise
            if let (prefix, earlier) = self.incomplete {
                // The rest of a frame header that was cut at the end of the last write.
                self.incomplete = nil
                var joined = prefix
                joined.writeImmutableBuffer(buffer)
                buffer = joined
                if let earlier, let promise { promise.futureResult.cascade(to: earlier) }
                promise = promise ?? earlier
            }
            self.runs.removeAll(keepingCapacity: true)
            let tail = self.outbound.admitNio(buffer, into: &self.runs)
            if tail == 0, self.runs.count <= 1, !(self.runs.first?.held ?? false) {
                self.emit(.byteBuffer(buffer), promise: promise, context: context)
            } else {
                // The promise goes with the piece written last: an incomplete tail, else the
                // last held piece, else the last piece.
                let carrier = tail > 0 ? nil : (self.runs.lastIndex(where: \.held) ?? self.runs.count - 1)
                for (index, run) in self.runs.enumerated() {
                    let piece = IOData.byteBuffer(buffer.readSlice(length: run.count)!)
                    let piecePromise = index == carrier ? promise : nil
                    if run.held {
                        self.held.append((piece, piecePromise))
                    } else {
                        self.emit(piece, promise: piecePromise, context: context)
                    }
                }
                if tail > 0 { self.incomplete = (buffer, promise) }
            }
        }
        let release = self.outbound.takeRelease()
        if release > 0 { self.writeHeld(release, context: context) }
    }

    func flush(context: ChannelHandlerContext) {
        self.unflushed = false
        self.writeMerged(context: context)
        context.flush()
        // RFC 9113 §5.4.1: after a GOAWAY for an error, "the endpoint MUST close the TCP
        // connection" (nio-http2 sent it and reported the error, but leaves the close to us).
        if self.goAway.errorCode != nil, !self.closing {
            self.closing = true
            context.close(promise: nil)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Written before the close, flushed only if the caller flushed (as without merging).
        self.writeMerged(context: context)
        context.close(mode: mode, promise: promise)
    }

    /// Every write toward TLS goes through here, so small ones share records.
    private func emit(_ data: IOData, promise: EventLoopPromise<Void>? = nil, context: ChannelHandlerContext) {
        let (earlier, this) = self.coalescing.add(data, promise: promise, allocator: context.channel.allocator)
        if let earlier { context.write(NIOAny(earlier.data), promise: earlier.promise) }
        if let this { context.write(NIOAny(this.data), promise: this.promise) }
    }

    private func writeMerged(context: ChannelHandlerContext) {
        if let write = self.coalescing.take() { context.write(NIOAny(write.data), promise: write.promise) }
    }

    /// Writes the oldest `count` bytes of held output, and marks them for the next flush.
    private func writeHeld(_ count: Int, context: ChannelHandlerContext) {
        var remaining = count
        var written = 0
        while remaining > 0, written < self.held.count {
            let (data, promise) = self.held[written]
            let size = data.readableBytes
            if size <= remaining {
                written += 1
                self.emit(data, promise: promise, context: context)
                remaining -= size
                continue
            }
            // Part of a buffer: the frames in it are split at a frame boundary.
            guard case .byteBuffer(var buffer) = data else { break }
            let piece = buffer.readSlice(length: remaining)!
            self.held[written] = (.byteBuffer(buffer), promise)
            self.emit(.byteBuffer(piece), context: context)
            remaining = 0
        }
        // Removed in one go: many frames can wait while the connection window is closed.
        self.held.removeFirst(written)
        self.unflushed = true
    }
}
