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
/// Sits directly after `NIOSSLHandler`.
final class RecordCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// The most plaintext one TLS record carries (RFC 8446 §5.1).
    static let recordPlaintextLimit = 1 << 14

    /// Writes merged since the last flush; `owned` once it is our own copy (a single write
    /// is passed on as it came, without a copy).
    private var pending: ByteBuffer?
    private var owned = false
    /// The first promise of the merged writes; later ones complete with it.
    private var promise: EventLoopPromise<Void>?

    init() {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .byteBuffer(let buffer) = Self.unwrapOutboundIn(data),
            buffer.readableBytes < Self.recordPlaintextLimit
        else {
            self.emit(context: context)
            context.write(data, promise: promise)
            return
        }
        if let pending = self.pending, pending.readableBytes + buffer.readableBytes > Self.recordPlaintextLimit {
            self.emit(context: context)
        }
        self.merge(buffer, allocator: context.channel.allocator)
        if let promise {
            if let carrier = self.promise {
                carrier.futureResult.cascade(to: promise)
            } else {
                self.promise = promise
            }
        }
    }

    func flush(context: ChannelHandlerContext) {
        self.emit(context: context)
        context.flush()
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

    private func merge(_ buffer: ByteBuffer, allocator: ByteBufferAllocator) {
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

    private func emit(context: ChannelHandlerContext) {
        guard let pending = self.pending else { return }
        let promise = self.promise
        self.pending = nil
        self.promise = nil
        context.write(NIOAny(IOData.byteBuffer(pending)), promise: promise)
    }
}
