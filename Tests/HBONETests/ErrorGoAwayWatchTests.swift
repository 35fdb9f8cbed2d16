@testable import HBONE
import NIOCore
import NIOEmbedded
import Testing

/// ``ErrorGoAwayWatch`` on nio-http2's outbound bytes: a GOAWAY with an error code is
/// noticed wherever the writes are cut, NO_ERROR (a graceful shutdown) is not, and bytes
/// inside other frames never are, even when they look like a GOAWAY.
@Suite("Error GOAWAY watch")
struct ErrorGoAwayWatchTests {
    typealias Frames = InboundDataSplicerTests

    static func goAway(lastStream: UInt32 = 0, code: UInt32, debug: [UInt8] = []) -> [UInt8] {
        let payload = [lastStream, code].flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
        return Frames.frame(0x7, stream: 0, payload + debug)
    }

    /// Feeds `bytes` cut after each index in `cuts`; the error code noticed.
    static func watch(_ bytes: [UInt8], cuts: [Int] = []) -> UInt32? {
        var watch = ErrorGoAwayWatch(role: .server)
        var start = 0
        for end in cuts + [bytes.count] where end > start {
            watch.observe(ByteBuffer(bytes: bytes[start..<end]))
            start = end
        }
        return watch.errorCode
    }

    @Test("a GOAWAY for an error is noticed after other frames, cut anywhere; NO_ERROR is not")
    func noticesErrors() {
        // A SETTINGS ACK has no payload: a header cut in it must not take the next frame's bytes.
        let settingsAck = Frames.frame(0x4, flags: 0x1, stream: 0, [])
        let before = Frames.settings + settingsAck + Frames.ping + Frames.data(1, Array(repeating: 9, count: 40)) + settingsAck
        let error = before + Self.goAway(lastStream: 7, code: 0x1, debug: Array("bad frame".utf8))
        #expect(Self.watch(error) == 0x1)
        for cut in 1..<error.count {
            #expect(Self.watch(error, cuts: [cut]) == 0x1, "cut at \(cut)")
            #expect(Self.watch(error, cuts: [cut, min(error.count, cut + 3)]) == 0x1, "cuts at \(cut) and 3 on")
        }
        #expect(Self.watch(before + Self.goAway(lastStream: 7, code: 0)) == nil)
        // The first error code counts; a graceful GOAWAY before it does not hide it.
        #expect(Self.watch(Self.goAway(code: 0) + Self.goAway(code: 0xb) + Self.goAway(code: 0x1)) == 0xb)
    }

    @Test("GOAWAY-shaped bytes inside a DATA payload, or a payload written as a file region, are skipped")
    func payloadsAreSkipped() {
        let lookalike = Self.goAway(code: 0x2)
        #expect(Self.watch(Frames.data(1, lookalike) + Frames.ping) == nil)
        // A header, then its payload as something other than a buffer, then a real GOAWAY.
        var watch = ErrorGoAwayWatch(role: .server)
        watch.observe(ByteBuffer(bytes: Array(Frames.data(1, lookalike).prefix(9))))
        watch.observe(count: lookalike.count)
        #expect(watch.errorCode == nil)
        watch.observe(ByteBuffer(bytes: Self.goAway(code: 0x3)))
        #expect(watch.errorCode == 0x3)
    }
}

extension ErrorGoAwayWatchTests {
    @Test("a client's output starts with the 24-byte connection preface, which is not a frame")
    func clientPreface() {
        let output = Frames.preface + Frames.settings + Self.goAway(code: 0x1)
        var client = ErrorGoAwayWatch(role: .client)
        client.observe(ByteBuffer(bytes: output))
        #expect(client.errorCode == 0x1)
        // Read as a frame, "PRI" announces 5 MB of payload and hides the GOAWAY.
        var misread = ErrorGoAwayWatch(role: .server)
        misread.observe(ByteBuffer(bytes: output))
        #expect(misread.errorCode == nil)
    }

    /// `DataSplicerHandler` and `RecordCoalescer` (one of them sits directly below
    /// `NIOHTTP2Handler`): what nio-http2 writes reaches the wire, and the flush that
    /// carries a GOAWAY with an error code closes the connection (RFC 9113 §5.4.1).
    @Test("the handler below nio-http2 closes after flushing an error GOAWAY, not after a NO_ERROR one",
          arguments: [true, false])
    func handlersClose(splicer: Bool) throws {
        for code: UInt32 in [0, 0x1] {
            let channel = EmbeddedChannel()
            if splicer {
                try channel.pipeline.syncOperations.addHandler(DataSplicerHandler(role: .server, configuration: HBONEConfiguration()))
            } else {
                try channel.pipeline.syncOperations.addHandler(RecordCoalescer(role: .server))
            }
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
            let goAway = Self.goAway(lastStream: 1, code: code)
            channel.write(IOData.byteBuffer(ByteBuffer(bytes: Frames.settings)), promise: nil)
            channel.write(IOData.byteBuffer(ByteBuffer(bytes: goAway)), promise: nil)
            #expect(channel.isActive, "not before the flush")
            channel.flush()
            var wire: [UInt8] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { wire += Array(buffer.readableBytesView) }
            #expect(wire == Frames.settings + goAway, "the GOAWAY is on the wire before the close")
            #expect(channel.isActive == (code == 0), "code \(code), splicer \(splicer)")
            _ = try? channel.finish()
        }
    }
}
