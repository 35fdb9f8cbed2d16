@testable import HBONE
import NIOCore
import Testing

/// ``OutboundDataSplicer`` without I/O: the peer's windows kept for every DATA frame on the
/// wire, ours and nio-http2's, and what nio-http2 is told (RFC 9113 §6.5.2, §6.9).
@Suite("Outbound DATA splicer")
struct OutboundDataSplicerTests {
    typealias Frames = InboundDataSplicerTests

    /// A server-side splicer whose nio-http2 has answered stream 1 (HEADERS written).
    static func machine(streams: [Int32] = [1]) -> OutboundDataSplicer {
        var machine = OutboundDataSplicer(role: .server)
        for stream in streams {
            let admitted = Self.admit(&machine, Frames.headers(stream))
            #expect(admitted.passed == Frames.headers(stream).count)
        }
        return machine
    }

    /// Offers nio-http2's `bytes`: the bytes that went on (count), those held, the incomplete tail.
    static func admit(_ machine: inout OutboundDataSplicer, _ bytes: [UInt8]) -> (passed: Int, held: Int, tail: Int) {
        var runs: [OutboundDataSplicer.NioRun] = []
        let tail = machine.admitNio(ByteBuffer(bytes: bytes), into: &runs)
        return (runs.filter { !$0.held }.map(\.count).reduce(0, +), runs.filter(\.held).map(\.count).reduce(0, +), tail)
    }

    /// The DATA frames in `writes`: stream, payload.
    static func dataFrames(_ output: OutboundDataSplicer.Output) -> [(stream: Int32, payload: [UInt8])] {
        var bytes = ByteBuffer()
        for write in output.writes { bytes.writeImmutableBuffer(write) }
        var frames: [(Int32, [UInt8])] = []
        while bytes.readableBytes >= 9 {
            let header = HTTP2FrameHeader(bytes, at: bytes.readerIndex)
            bytes.moveReaderIndex(forwardBy: 9)
            #expect(header.type == 0 && header.flags == 0)
            frames.append((header.streamID, bytes.readBytes(length: header.length)!))
        }
        #expect(bytes.readableBytes == 0)
        return frames
    }

    static func send(_ machine: inout OutboundDataSplicer, _ stream: Int32, _ count: Int, _ value: UInt8 = 1) -> OutboundDataSplicer.Output {
        var output = OutboundDataSplicer.Output()
        machine.send(stream, ByteBuffer(repeating: value, count: count), into: &output)
        return output
    }

    static func update(_ machine: inout OutboundDataSplicer, _ stream: Int32, _ increment: UInt32) -> (OutboundDataSplicer.WindowUpdateVerdict, OutboundDataSplicer.Output) {
        var output = OutboundDataSplicer.Output()
        let verdict = machine.windowUpdate(streamID: stream, increment: increment, into: &output)
        return (verdict, output)
    }

    @Test("a stream is spliced only after nio-http2 wrote its HEADERS and before it wrote DATA of it")
    func registration() {
        var machine = Self.machine(streams: [1, 3])
        let result1 = machine.register(5)
        #expect(!result1, "no HEADERS written for stream 5")
        let data = Frames.data(3, [1, 2, 3])
        let result2 = Self.admit(&machine, data).passed
        #expect(result2 == data.count)
        let result3 = machine.register(3)
        #expect(!result3, "nio-http2 already sent DATA of stream 3")
        let result4 = machine.register(1)
        #expect(result4)
        let result5 = machine.register(1)
        #expect(!result5)
        let end = Frames.data(1, [], endStream: true)
        let result6 = Self.admit(&machine, end).passed
        #expect(result6 == end.count)
        #expect(!machine.isSpliced(1), "END_STREAM written: the stream is done on our side")
    }

    @Test("frames stay within the stream window, the connection window and SETTINGS_MAX_FRAME_SIZE; the rest waits for WINDOW_UPDATE")
    func windows() {
        var machine = Self.machine()
        let result7 = machine.register(1)
        #expect(result7)
        // Defaults (§6.5.2): 65,535-byte windows, 16,384-byte frames.
        let first = Self.send(&machine, 1, 100_000)
        let frames = Self.dataFrames(first)
        #expect(frames.map(\.payload.count) == [16_384, 16_384, 16_384, 16_383])
        #expect(frames.allSatisfy { $0.stream == 1 })
        #expect(machine.queuedBytes(1) == 100_000 - 65_535)
        #expect(machine.connectionWindow == 0)
        #expect(first.drained.isEmpty)

        // Stream credit alone does not help: the connection window is empty.
        let (streamVerdict, afterStream) = Self.update(&machine, 1, 50_000)
        #expect(streamVerdict == .drop, "nio-http2 never sends DATA on a spliced stream")
        #expect(afterStream.writes.isEmpty)
        // Connection credit lets the rest go: 34,465 bytes, and the stream drains.
        let (connectionVerdict, afterConnection) = Self.update(&machine, 0, 40_000)
        #expect(Self.dataFrames(afterConnection).map(\.payload.count) == [16_384, 16_384, 1_697])
        #expect(afterConnection.drained == [1])
        #expect(machine.queuedBytes(1) == 0)
        #expect(machine.connectionWindow == 40_000 - 34_465)
        // nio-http2 believes it has 65,535 and the real window is 5,535 now: it gets nothing.
        #expect(connectionVerdict == .drop)
        #expect(machine.nioConnectionWindow == 65_535)
    }

    @Test("nio-http2's DATA waits while the real window is short; its control frames and other streams' frames do not; it goes first when window comes")
    func nioShare() {
        var machine = Self.machine(streams: [1, 3, 5])
        #expect(machine.register(1) == true)
        _ = Self.send(&machine, 1, 60_000)
        #expect(machine.connectionWindow == 5_535)
        // nio-http2 (stream 3, not spliced) writes 10,000 bytes: it believes it may.
        let data = Frames.data(3, Array(repeating: 9, count: 10_000))
        let header = Self.admit(&machine, Array(data.prefix(9)))
        #expect(header.passed == 0 && header.held == 9)
        let payload = Self.admit(&machine, Array(data.dropFirst(9)))
        #expect(payload.passed == 0 && payload.held == 10_000)
        #expect(machine.heldDataFrames == 1)
        // A PING, SETTINGS ACK and stream 5's HEADERS go on; stream 3's END_STREAM waits behind its DATA.
        let ping = Self.admit(&machine, Frames.ping)
        #expect(ping.passed == Frames.ping.count)
        let headers = Self.admit(&machine, Frames.headers(5))
        #expect(headers.passed == Frames.headers(5).count)
        let end = Frames.data(3, [], endStream: true)
        let ended = Self.admit(&machine, end)
        #expect(ended.held == end.count)
        // While it waits, spliced bytes wait too: it goes first.
        let queued = Self.send(&machine, 1, 1_000)
        #expect(queued.writes.isEmpty)
        let (verdict, output) = Self.update(&machine, 0, 10_000)
        #expect(output.nioRelease == data.count + end.count, "the DATA frame and the END_STREAM behind it")
        #expect(Self.dataFrames(output).map(\.payload.count) == [1_000], "then the spliced bytes")
        #expect(machine.connectionWindow == 4_535)
        #expect(verdict == .drop, "nio-http2 believes it has 55,535 and the real window is 5,535")
        #expect(machine.nioConnectionWindow == 55_535)

        // A large update: nio-http2 is raised to the real window, no further.
        let (bigVerdict, _) = Self.update(&machine, 0, 1 << 20)
        #expect(bigVerdict == .forwardIncrement(UInt32(4_535 + (1 << 20) - 55_535)))
        #expect(machine.nioConnectionWindow == machine.connectionWindow)
    }

    @Test("nio-http2 gets its share of a connection WINDOW_UPDATE before spliced streams with queued bytes take the rest")
    func nioNotStarved() {
        var machine = Self.machine(streams: [1, 3])
        #expect(machine.register(1) == true)
        // nio-http2 used its whole view on stream 3.
        let data = Frames.data(3, Array(repeating: 9, count: 65_535))
        #expect(Self.admit(&machine, data).passed == data.count)
        #expect(machine.nioConnectionWindow == 0)
        _ = Self.send(&machine, 1, 1 << 20)
        #expect(machine.queuedBytes(1) == 1 << 20)
        let (verdict, output) = Self.update(&machine, 0, 30_000)
        #expect(verdict == .forward, "nio-http2 is told of the window first")
        #expect(machine.nioConnectionWindow == 30_000)
        #expect(Self.dataFrames(output).map(\.payload.count).reduce(0, +) == 30_000, "the spliced stream uses it too")
    }

    @Test("a stream WINDOW_UPDATE that comes before our HEADERS counts once the stream is tracked")
    func earlyStreamCredit() {
        var machine = OutboundDataSplicer(role: .server)
        #expect(Self.update(&machine, 1, 1_000).0 == .forward)
        #expect(Self.admit(&machine, Frames.headers(1)).passed == Frames.headers(1).count)
        #expect(machine.streamWindow(1) == 65_535 + 1_000)
    }

    @Test("after our END_STREAM a spliced stream's WINDOW_UPDATEs are still kept from nio-http2, until its channel closes")
    func tombstone() {
        var machine = Self.machine()
        #expect(machine.register(1) == true)
        _ = Self.send(&machine, 1, 1_000)
        let end = Frames.data(1, [], endStream: true)
        #expect(Self.admit(&machine, end).passed == end.count)
        #expect(Self.update(&machine, 1, 1_000).0 == .drop)
        let ignored = Self.send(&machine, 1, 10)
        #expect(ignored.writes.isEmpty, "nothing after END_STREAM")
        machine.forget(1)
        #expect(Self.update(&machine, 1, 1_000).0 == .forward)
        #expect(machine.trackedStreams == 0)
    }

    @Test("without spliced streams every WINDOW_UPDATE reaches nio-http2 unchanged")
    func transparentWithoutSplicing() {
        var machine = Self.machine(streams: [1])
        let result12 = Self.update(&machine, 0, 16 << 20).0
        #expect(result12 == .forward)
        let result13 = Self.update(&machine, 1, 1 << 20).0
        #expect(result13 == .forward)
        let result14 = Self.update(&machine, 9, 100).0
        #expect(result14 == .forward, "unknown streams are nio-http2's business")
        let result15 = Self.update(&machine, 0, 0).0
        #expect(result15 == .forward, "a zero increment is nio-http2's to reject")
        let data = Frames.data(1, Array(repeating: 1, count: 70_000))
        let result16 = Self.admit(&machine, data).passed
        #expect(result16 == data.count)
        let result17 = Self.update(&machine, 0, 70_000).0
        #expect(result17 == .forward)
        #expect(machine.nioConnectionWindow == machine.connectionWindow)
    }

    @Test("SETTINGS_INITIAL_WINDOW_SIZE moves spliced streams' windows, below zero too; SETTINGS_MAX_FRAME_SIZE sizes frames")
    func settings() {
        var machine = Self.machine()
        let result18 = machine.register(1)
        #expect(result18)
        _ = Self.update(&machine, 0, 1 << 20)
        var output = OutboundDataSplicer.Output()
        let result19 = machine.settings([.init(identifier: 0x4, value: 1_000), .init(identifier: 0x5, value: 20_000)], into: &output)
        #expect(result19 == nil)
        #expect(machine.streamWindow(1) == 1_000)
        _ = Self.send(&machine, 1, 1_000)
        #expect(machine.streamWindow(1) == 0)
        output = OutboundDataSplicer.Output()
        let result20 = machine.settings([.init(identifier: 0x4, value: 0)], into: &output)
        #expect(result20 == nil)
        #expect(machine.streamWindow(1) == -1_000)
        let blocked = Self.send(&machine, 1, 50_000)
        #expect(blocked.writes.isEmpty)
        output = OutboundDataSplicer.Output()
        let result21 = machine.settings([.init(identifier: 0x4, value: 100_000)], into: &output)
        #expect(result21 == nil)
        #expect(Self.dataFrames(output).map(\.payload.count) == [20_000, 20_000, 10_000])
        output = OutboundDataSplicer.Output()
        let result22 = machine.settings([.init(identifier: 0x4, value: 1 << 31 - 1)], into: &output)
        #expect(result22 == nil)
        let overflow = machine.settings([.init(identifier: 0x4, value: 1 << 31 - 1)], into: &output)
        #expect(overflow == nil, "same value: no change")
        let result23 = Self.update(&machine, 1, UInt32(Int32.max)).0
        #expect(result23 == .streamError(code: 0x3), "a stream's window: a stream error (§6.9.1)")
    }

    @Test("a window pushed above 2^31−1 is a FLOW_CONTROL_ERROR (RFC 9113 §6.9.1): of the connection for its window, of the stream for a stream's")
    func overflow() {
        var machine = Self.machine(streams: [1, 3])
        let registered = machine.register(1) && machine.register(3)
        #expect(registered)
        // Stream 1 sends its window and queues the rest; stream 3 has nothing queued.
        let first = Self.send(&machine, 1, 100_000)
        #expect(Self.dataFrames(first).map(\.payload.count).reduce(0, +) == 65_535)
        #expect(machine.queuedBytes(1) == 34_465)
        let one = Self.update(&machine, 1, 1)
        #expect(one.0 == .drop && one.1.writes.isEmpty, "window 1, but no connection window")
        let streamOverflow = Self.update(&machine, 1, UInt32(Int32.max)).0
        #expect(streamOverflow == .streamError(code: 0x3))
        #expect(machine.queuedBytes(1) == 0, "its queued bytes are dropped")
        #expect(!machine.isSpliced(1))
        let afterReset = Self.send(&machine, 1, 10)
        #expect(afterReset.writes.isEmpty, "nothing more is sent on a reset stream")
        let late = Self.update(&machine, 1, UInt32(Int32.max)).0
        #expect(late == .drop, "until the handler takes it out, later updates end nothing more")
        machine.forget(1)
        let forgotten = Self.update(&machine, 1, 1).0
        #expect(forgotten == .forward, "then nio-http2 gets them (it ignores frames on a stream it reset)")
        // The connection goes on: stream 3 sends once the connection window reopens.
        let reopened = Self.update(&machine, 0, 1_000)
        #expect(reopened.1.writes.isEmpty, "stream 1's dropped bytes do not take the new window")
        let other = Self.send(&machine, 3, 500)
        #expect(Self.dataFrames(other).map(\.stream) == [3])
        #expect(machine.connectionWindow == 500)
        // The connection's own window: a connection error.
        let result24 = Self.update(&machine, 0, UInt32(Int32.max) - 500).0
        #expect(result24 == .forwardIncrement(UInt32(Int32.max) - 65_535), "nio-http2's view rises to the same 2^31−1")
        let result25 = Self.update(&machine, 0, 1).0
        #expect(result25 == .connectionError(code: 0x3))
    }

    @Test("a client's nio-http2 starts with the 24-byte preface, which is not a frame; split headers wait for their rest")
    func prefaceAndSplitHeaders() {
        var machine = OutboundDataSplicer(role: .client)
        let opening = Frames.preface + Frames.settings + Frames.headers(1)
        let first = Self.admit(&machine, Array(opening.prefix(30)))
        #expect(first.passed == 24 && first.tail == 6, "the SETTINGS header is incomplete")
        let rest = Self.admit(&machine, Array(opening.dropFirst(24)))
        #expect(rest.passed == opening.count - 24 && rest.tail == 0)
        let result28 = machine.register(1)
        #expect(result28)
    }

    @Test("a forgotten stream's queue is dropped and the others go on")
    func forget() {
        var machine = Self.machine(streams: [1, 3])
        let result29 = machine.register(1)
        #expect(result29)
        let result30 = machine.register(3)
        #expect(result30)
        _ = Self.send(&machine, 1, 65_535)
        _ = Self.send(&machine, 1, 5_000)
        _ = Self.send(&machine, 3, 7_000)
        machine.forget(1)
        let (_, output) = Self.update(&machine, 0, 100_000)
        #expect(Self.dataFrames(output).map(\.stream) == [3])
        #expect(Self.dataFrames(output).map(\.payload.count) == [7_000])
        #expect(output.drained == [3])
    }
}
