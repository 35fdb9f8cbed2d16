@testable import HBONE
import NIOCore
import NIOEmbedded
import Testing

/// ``RecordCoalescer`` on an embedded channel: what reaches the TLS handler's place, in
/// which pieces, and when.
@Suite("Record coalescer")
struct RecordCoalescerTests {
    /// The bytes written here are not HTTP/2 frames; none starts like a GOAWAY frame (type 7),
    /// which would make the handler close the channel (``ErrorGoAwayWatch``).
    static func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RecordCoalescer(role: .server))
        return channel
    }

    static func bytes(_ count: Int, _ value: UInt8) -> ByteBuffer {
        ByteBuffer(repeating: value, count: count)
    }

    /// Every write that reached the channel's end, in order.
    static func written(_ channel: EmbeddedChannel) throws -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out.append(buffer) }
        return out
    }

    @Test("a frame header, its small payload and a WINDOW_UPDATE leave as one buffer at flush")
    func mergesSmallWrites() throws {
        let channel = try Self.channel()
        let header = Self.bytes(9, 1), payload = Self.bytes(1024, 2), update = Self.bytes(13, 3)
        channel.write(header, promise: nil)
        channel.write(payload, promise: nil)
        channel.write(update, promise: nil)
        let beforeFlush = try Self.written(channel)
        #expect(beforeFlush.isEmpty)
        channel.flush()
        let out = try Self.written(channel)
        #expect(out.count == 1)
        #expect(out.first == ByteBuffer(bytes: Array(header.readableBytesView) + Array(payload.readableBytesView) + Array(update.readableBytesView)))
        _ = try channel.finish()
    }

    @Test("a single write is passed on as it came")
    func singleWriteUnchanged() throws {
        let channel = try Self.channel()
        let payload = Self.bytes(100, 6)
        channel.writeAndFlush(payload, promise: nil)
        let out = try Self.written(channel)
        #expect(out == [payload])
        _ = try channel.finish()
    }

    @Test("merged buffers stay within one record's plaintext, and a large write is not copied into one")
    func recordLimit() throws {
        let channel = try Self.channel()
        let limit = RecordCoalescing.recordPlaintextLimit
        let a = Self.bytes(9, 1), b = Self.bytes(limit - 9, 2), c = Self.bytes(9, 3)
        let bulk = Self.bytes(limit * 16, 4), tail = Self.bytes(20, 5)
        for buffer in [a, b, c, bulk, tail] { channel.write(buffer, promise: nil) }
        channel.flush()
        let out = try Self.written(channel)
        #expect(out.map(\.readableBytes) == [limit, 9, limit * 16, 20])
        #expect(out.allSatisfy { $0.readableBytes <= limit || $0 == bulk })
        var joined = ByteBuffer()
        for buffer in out { joined.writeImmutableBuffer(buffer) }
        var expected = ByteBuffer()
        for buffer in [a, b, c, bulk, tail] { expected.writeImmutableBuffer(buffer) }
        #expect(joined == expected)
        _ = try channel.finish()
    }

    @Test("every merged write's promise completes when the merged buffer is written")
    func promises() throws {
        let channel = try Self.channel()
        let first = channel.eventLoop.makePromise(of: Void.self)
        let second = channel.eventLoop.makePromise(of: Void.self)
        let third = channel.eventLoop.makePromise(of: Void.self)
        var done: [Int] = []
        first.futureResult.assumeIsolated().whenSuccess { done.append(1) }
        second.futureResult.assumeIsolated().whenSuccess { done.append(2) }
        third.futureResult.assumeIsolated().whenSuccess { done.append(3) }
        channel.write(Self.bytes(9, 1), promise: nil)
        channel.write(Self.bytes(10, 2), promise: first)
        channel.write(Self.bytes(11, 3), promise: second)
        channel.write(Self.bytes(12, 4), promise: third)
        #expect(done.isEmpty)
        channel.flush()
        #expect(done.sorted() == [1, 2, 3])
        let out = try Self.written(channel)
        #expect(out.map(\.readableBytes) == [42])
        _ = try channel.finish()
    }

    /// Records the writes and closes that pass it (in the place of `NIOSSLHandler`).
    final class Recorder: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        var events: [String] = []
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            self.events.append("write \(Self.unwrapOutboundIn(data).readableBytes)")
            context.write(data, promise: promise)
        }
        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            self.events.append("close")
            context.close(mode: mode, promise: promise)
        }
    }

    @Test("a close passes on what was written before it, before the close")
    func closeKeepsOrder() throws {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.pipeline.syncOperations.addHandler(RecordCoalescer(role: .server))
        channel.write(Self.bytes(9, 1), promise: nil)
        channel.write(Self.bytes(9, 2), promise: nil)
        #expect(recorder.events.isEmpty)
        try channel.close().wait()
        #expect(recorder.events == ["write 18", "close"])
    }
}
