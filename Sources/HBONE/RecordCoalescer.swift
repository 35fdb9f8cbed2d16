internal import NIOCore

/// Merges the small writes between two flushes into one buffer before `NIOSSLHandler`, so
/// they leave as one TLS record instead of one record each.
///
/// `NIOSSLHandler` hands every buffered write to `SSL_write` on its own, and each call is
/// sealed into at least one record: a header, an AEAD tag and the inner content type
/// (RFC 8446 §5.2, 22 bytes with AES-GCM) and one seal here, one open at the peer.
/// nio-http2 writes a frame's 9-byte header and its payload as two writes, so a 1 KiB DATA
/// frame went out as two records, and a WINDOW_UPDATE beside it as a third.
///
/// Consecutive byte buffers are copied into one while it stays within one record's
/// plaintext (2^14 bytes, RFC 8446 §5.1: "The record layer fragments information blocks
/// into TLSPlaintext records carrying data in chunks of 2^14 bytes or less"). A larger
/// write passes unchanged after what was merged before it, so bulk DATA payloads are not
/// copied. Order is kept, and a merged write's promise completes with the merged buffer's.
///
/// A value type; ``RecordCoalescer`` and `DataSplicerHandler` (which takes its place when
/// DATA is spliced, saving a pipeline hop per event) do the writes.
struct RecordCoalescing {
    /// The most plaintext one TLS record carries (RFC 8446 §5.1).
    static let recordPlaintextLimit = 1 << 14

    /// Writes merged since the last flush; `owned` once it is our own copy (a single write
    /// is passed on as it came, without a copy).
    private var pending: ByteBuffer?
    private var owned = false
    /// The first promise of the merged writes; later ones complete with it.
    private var promise: EventLoopPromise<Void>?

    /// A write to pass on now, with its promise.
    typealias Write = (data: IOData, promise: EventLoopPromise<Void>?)

    /// Takes `data`; returns, in order, what must be written now (merged writes it does not
    /// fit with, and `data` itself when it is not merged).
    mutating func add(
        _ data: IOData, promise: EventLoopPromise<Void>?, allocator: ByteBufferAllocator
    ) -> (earlier: Write?, this: Write?) {
        guard case .byteBuffer(let buffer) = data, buffer.readableBytes < Self.recordPlaintextLimit else {
            return (self.take(), (data, promise))
        }
        var earlier: Write? = nil
        if let pending = self.pending, pending.readableBytes + buffer.readableBytes > Self.recordPlaintextLimit {
            earlier = self.take()
        }
        self.merge(buffer, allocator: allocator)
        if let promise {
            if let carrier = self.promise {
                carrier.futureResult.cascade(to: promise)
            } else {
                self.promise = promise
            }
        }
        return (earlier, nil)
    }

    /// What was merged, to write before a flush or a close.
    mutating func take() -> Write? {
        guard let pending = self.pending else { return nil }
        let promise = self.promise
        self.pending = nil
        self.promise = nil
        return (.byteBuffer(pending), promise)
    }

    private mutating func merge(_ buffer: ByteBuffer, allocator: ByteBufferAllocator) {
        // Taken out of `pending`, so the append below holds the only reference and does not copy.
        guard var merged = self.pending.take() else {
            self.pending = buffer
            self.owned = false
            return
        }
        if !self.owned {
            merged = Self.ownedCopy(of: merged, allocator: allocator)
            self.owned = true
        }
        merged.writeImmutableBuffer(buffer)
        self.pending = merged
    }

    private static func ownedCopy(of buffer: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var copy = allocator.buffer(capacity: Self.recordPlaintextLimit)
        copy.writeImmutableBuffer(buffer)
        return copy
    }
}

/// ``RecordCoalescing`` as a handler, directly after `NIOSSLHandler`, for connections
/// whose DATA is not spliced; it also closes the connection once nio-http2 has sent a
/// GOAWAY for an error (``ErrorGoAwayWatch``).
final class RecordCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private var coalescing = RecordCoalescing()
    /// Whether nio-http2 has sent a GOAWAY for an error (RFC 9113 §5.4.1).
    private var goAway: ErrorGoAwayWatch
    private var closing = false

    /// For the connection's client or server end (a client's output starts with the preface).
    init(role: InboundDataSplicer.Role) {
        self.goAway = ErrorGoAwayWatch(role: role)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let data = Self.unwrapOutboundIn(data)
        switch data {
        case .byteBuffer(let buffer): self.goAway.observe(buffer)
        case .fileRegion(let region): self.goAway.observe(count: region.readableBytes)
        }
        let (earlier, this) = self.coalescing.add(data, promise: promise, allocator: context.channel.allocator)
        if let earlier { context.write(NIOAny(earlier.data), promise: earlier.promise) }
        if let this { context.write(NIOAny(this.data), promise: this.promise) }
    }

    func flush(context: ChannelHandlerContext) {
        self.emit(context: context)
        context.flush()
        // RFC 9113 §5.4.1: after a GOAWAY for an error, "the endpoint MUST close the TCP connection".
        if self.goAway.errorCode != nil, !self.closing {
            self.closing = true
            context.close(promise: nil)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // What was written before the close reaches NIOSSLHandler as it would have without
        // this handler: written, and flushed only if the caller flushed.
        self.emit(context: context)
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.emit(context: context)
    }

    private func emit(context: ChannelHandlerContext) {
        if let write = self.coalescing.take() { context.write(NIOAny(write.data), promise: write.promise) }
    }
}
