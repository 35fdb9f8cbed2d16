@testable import HBONE
import NIOCore
import Testing

/// ``InboundDataSplicer`` without I/O: which bytes go to nio-http2, which to a tunnel, and
/// the flow control it does for the bytes it takes (RFC 9113 §4.1, §6.1, §6.9).
@Suite("Inbound DATA splicer")
struct InboundDataSplicerTests {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(_ type: UInt8, flags: UInt8 = 0, stream: Int32, _ payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        var bytes: [UInt8] = [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags]
        bytes += [UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)]
        return bytes + payload
    }

    static func headers(_ stream: Int32, endStream: Bool = false) -> [UInt8] {
        frame(0x1, flags: 0x4 | (endStream ? 0x1 : 0), stream: stream, [0x82, 0x84])
    }

    static func data(_ stream: Int32, _ payload: [UInt8], endStream: Bool = false, padding: Int? = nil) -> [UInt8] {
        guard let padding else { return frame(0x0, flags: endStream ? 0x1 : 0, stream: stream, payload) }
        return frame(0x0, flags: 0x8 | (endStream ? 0x1 : 0), stream: stream, [UInt8(padding)] + payload + Array(repeating: 0, count: padding))
    }

    static let settings = frame(0x4, stream: 0, [0, 4, 0, 0x40, 0, 0])
    static let ping = frame(0x6, stream: 0, Array(repeating: 7, count: 8))

    static func machine(_ role: InboundDataSplicer.Role = .server, window: Int = 1 << 20) -> InboundDataSplicer {
        InboundDataSplicer(role: role, streamWindow: window, connectionWindow: 4 * window, maximumFrameSize: 1 << 16)
    }

    /// Feeds `chunks` and collects what came out.
    struct Output {
        var forwarded: [UInt8] = []
        var forwardActions = 0
        var delivered: [Int32: [UInt8]] = [:]
        var errors: [UInt32] = []
        var windowUpdates: [(Int32, UInt32)] = []
        var settings: [InboundDataSplicer.Setting] = []
    }

    static func feed(_ machine: inout InboundDataSplicer, _ chunks: [[UInt8]], into output: inout Output) {
        for chunk in chunks {
            var buffer = ByteBuffer(bytes: chunk)
            while let action = machine.next(&buffer) {
                switch action {
                case .forward(let bytes):
                    output.forwarded += Array(bytes.readableBytesView)
                    output.forwardActions += 1
                case .deliver(let stream, let bytes):
                    output.delivered[stream, default: []] += Array(bytes.readableBytesView)
                case .connectionError(let code, _):
                    output.errors.append(code)
                    return
                case .windowUpdate(let stream, let increment, let frame):
                    // The handler passes it on unless the outbound splicer keeps it.
                    output.forwarded += Array(frame.readableBytesView)
                    output.windowUpdates.append((stream, increment))
                case .settings(let settings, let frame):
                    output.forwarded += Array(frame.readableBytesView)
                    output.settings += settings
                }
            }
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("a registered stream's DATA is taken; everything else reaches nio-http2 unchanged and in one slice per run")
    func takesRegisteredData() {
        var machine = Self.machine()
        var output = Output()
        let opening = Self.preface + Self.ping + Self.headers(1)
        Self.feed(&machine, [opening], into: &output)
        #expect(output.forwarded == opening)
        #expect(output.forwardActions == 1)
        let result1 = machine.register(1)
        #expect(result1)
        let result2 = !machine.register(1)
        #expect(result2, "registered twice")
        let result3 = !machine.register(3)
        #expect(result3, "a stream that never opened")

        let payload = Array((0..<1000).map { UInt8($0 & 0xff) })
        let end = Self.data(1, [1, 2, 3], endStream: true)
        Self.feed(&machine, [Self.ping + Self.data(1, payload) + Self.ping + end], into: &output)
        #expect(output.delivered[1] == payload)
        #expect(output.forwarded == opening + Self.ping + Self.ping + end, "END_STREAM goes to nio-http2 with its payload")
        #expect(!machine.isSpliced(1), "END_STREAM ended the stream")
        #expect(output.errors.isEmpty)
    }

    @Test("a stream whose DATA already went to nio-http2 cannot be registered (bytes would overtake queued ones)")
    func refusesAfterForwardedData() {
        var machine = Self.machine(.client)
        var output = Output()
        Self.feed(&machine, [Self.headers(1) + Self.data(1, [9, 9])], into: &output)
        let result4 = !machine.register(1)
        #expect(result4)
        Self.feed(&machine, [Self.data(1, [8])], into: &output)
        #expect(output.delivered.isEmpty)
        #expect(output.forwarded == Self.headers(1) + Self.data(1, [9, 9]) + Self.data(1, [8]))
    }

    @Test("RST_STREAM and END_STREAM on HEADERS end a stream; unknown streams' DATA goes to nio-http2")
    func endsStreams() {
        var machine = Self.machine(.client)
        var output = Output()
        Self.feed(&machine, [Self.headers(1), Self.headers(3)], into: &output)
        let result5 = machine.register(1) && machine.register(3)
        #expect(result5)
        Self.feed(&machine, [Self.frame(0x3, stream: 1, [0, 0, 0, 8]), Self.headers(3, endStream: true)], into: &output)
        #expect(!machine.isSpliced(1) && !machine.isSpliced(3))
        #expect(machine.trackedStreams == 0)
        Self.feed(&machine, [Self.data(5, [1])], into: &output)
        #expect(output.delivered.isEmpty)
        #expect(output.forwarded.suffix(10) == Self.data(5, [1])[...])
    }

    @Test("padding is stripped and charged to flow control; padding as long as the payload is PROTOCOL_ERROR")
    func padding() {
        var machine = Self.machine(.client, window: 64)
        var output = Output()
        Self.feed(&machine, [Self.headers(1)], into: &output)
        let result6 = machine.register(1)
        #expect(result6)
        Self.feed(&machine, [Self.data(1, [1, 2, 3], padding: 4), Self.data(1, [], padding: 0)], into: &output)
        #expect(output.delivered[1] == [1, 2, 3])
        #expect(output.forwarded == Self.headers(1))
        // 8 + 1 bytes charged of 64: a 56-byte frame exceeds the window.
        Self.feed(&machine, [Self.data(1, Array(repeating: 0, count: 56))], into: &output)
        #expect(output.errors == [InboundDataSplicer.flowControlError])

        var bad = Self.machine(.client)
        var badOutput = Output()
        Self.feed(&bad, [Self.headers(1)], into: &badOutput)
        let result7 = bad.register(1)
        #expect(result7)
        Self.feed(&bad, [Self.frame(0x0, flags: 0x8, stream: 1, [3, 0, 0])], into: &badOutput)
        #expect(badOutput.errors == [InboundDataSplicer.protocolError])
    }

    @Test("frames before a connection error still reach nio-http2, in the same read as the bad frame")
    func framesBeforeAnError() {
        var machine = Self.machine(.client, window: 64)
        var output = Output()
        Self.feed(&machine, [Self.headers(1) + Self.headers(3)], into: &output)
        let registered = machine.register(1)
        #expect(registered)
        // Stream 3 (not spliced) ends with its last DATA, then stream 1 overruns its window:
        // one read. nio-http2 must get stream 3's END_STREAM before the GOAWAY.
        let last = Self.data(3, [9, 9], endStream: true)
        Self.feed(&machine, [Self.ping + last + Self.data(1, Array(repeating: 0, count: 65))], into: &output)
        #expect(output.forwarded == Self.headers(1) + Self.headers(3) + Self.ping + last)
        #expect(output.errors == [InboundDataSplicer.flowControlError])
        #expect(output.delivered.isEmpty)
    }

    @Test("split anywhere: every cut of a frame sequence gives the same bytes to nio-http2 and to the tunnels")
    func splitsAnywhere() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<200 {
            var wire = Self.preface + Self.settings + Self.headers(1) + Self.headers(3)
            var expectForwarded = wire
            var expectDelivered: [Int32: [UInt8]] = [:]
            for _ in 0..<Int.random(in: 1...12, using: &generator) {
                switch Int.random(in: 0..<5, using: &generator) {
                case 0, 1:
                    let stream: Int32 = Bool.random(using: &generator) ? 1 : 3
                    let payload = (0..<Int.random(in: 0...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                    let padding = Bool.random(using: &generator) ? Int.random(in: 0...20, using: &generator) : nil
                    wire += Self.data(stream, payload, padding: padding)
                    expectDelivered[stream, default: []] += payload
                case 2:
                    wire += Self.ping
                    expectForwarded += Self.ping
                case 3:
                    let update = Self.frame(0x8, stream: 0, [0, 0, 1, 0])
                    wire += update
                    expectForwarded += update
                default:
                    let other = Self.data(7, [1, 2, 3])  // a stream never opened: nio-http2's
                    wire += other
                    expectForwarded += other
                }
            }
            var machine = Self.machine()
            var output = Output()
            // The opening (preface, SETTINGS, two HEADERS) first, then register both streams.
            let opening = Self.preface.count + Self.settings.count + 2 * Self.headers(1).count
            Self.feed(&machine, [Array(wire[..<opening])], into: &output)
            let result8 = machine.register(1) && machine.register(3)
            #expect(result8)
            // The rest cut into pieces of random size, every third round single bytes.
            var rest: [[UInt8]] = []
            var index = opening
            while index < wire.count {
                let size = round % 3 == 0 ? 1 : Int.random(in: 1...64, using: &generator)
                rest.append(Array(wire[index..<min(wire.count, index + size)]))
                index += size
            }
            Self.feed(&machine, rest, into: &output)
            #expect(output.errors.isEmpty)
            #expect(output.forwarded == expectForwarded, "round \(round)")
            #expect((output.delivered[1] ?? []) == (expectDelivered[1] ?? []), "round \(round)")
            #expect((output.delivered[3] ?? []) == (expectDelivered[3] ?? []), "round \(round)")
        }
    }

    @Test("credit: WINDOW_UPDATE for stream and connection in batches of half a window, held while the TCP side is full")
    func credit() {
        var machine = Self.machine(.client, window: 1000)  // connection window 4000
        var output = Output()
        Self.feed(&machine, [Self.headers(1)], into: &output)
        let result9 = machine.register(1)
        #expect(result9)
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 400))], into: &output)
        let result10 = machine.readComplete { _ in true }.isEmpty
        #expect(result10, "400 < half the stream window")
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 200))], into: &output)
        let first = machine.readComplete { _ in true }
        #expect(first.map(\.streamID) == [1] && first.map(\.increment) == [600])
        // The TCP side is full: nothing is returned until it drains.
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 900))], into: &output)
        let result11 = machine.readComplete { _ in false }.isEmpty
        #expect(result11)
        // 1500 received of the 1000 + 600 granted: 100 more fit, 101 do not.
        var fits = machine
        var fitsOutput = Output()
        Self.feed(&fits, [Self.data(1, Array(repeating: 1, count: 100))], into: &fitsOutput)
        #expect(fitsOutput.errors.isEmpty)
        var probe = machine
        var probeOutput = Output()
        Self.feed(&probe, [Self.data(1, Array(repeating: 1, count: 101))], into: &probeOutput)
        #expect(probeOutput.errors == [InboundDataSplicer.flowControlError])
        let drained = machine.becameWritable(1)
        #expect(drained.map(\.streamID) == [1] && drained.map(\.increment) == [900])
        // Connection credit comes at half the connection window (2000): 400 + 200 + 900 = 1500 so far.
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 500))], into: &output)
        let connection = machine.readComplete { _ in true }
        #expect(connection.map(\.streamID) == [1, 0] && connection.map(\.increment) == [500, 2000])
        // A stream that ends returns what it held to the connection.
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 300))], into: &output)
        let result12 = machine.readComplete { _ in false }.isEmpty
        #expect(result12)
        let result13 = machine.forget(1).isEmpty
        #expect(result13, "300 < 2000")
        #expect(!machine.isSpliced(1))
    }

    @Test("padding is returned at once: a peer padding every frame keeps its windows")
    func paddingCredit() {
        var machine = Self.machine(.client, window: 100)  // stream threshold 50, connection 200
        var output = Output()
        Self.feed(&machine, [Self.headers(1)], into: &output)
        let registered = machine.register(1)
        #expect(registered)
        var streamCredit = 0
        var connectionCredit = 0
        // 40 rounds of 5 payload bytes in 46-byte frames: 1840 bytes charged against a 100-byte window.
        for _ in 0..<40 {
            Self.feed(&machine, [Self.data(1, [1, 2, 3, 4, 5], padding: 40)], into: &output)
            for update in machine.readComplete(isWritable: { _ in true }) {
                if update.streamID == 0 { connectionCredit += Int(update.increment) } else { streamCredit += Int(update.increment) }
            }
        }
        #expect(output.errors.isEmpty)
        #expect(output.delivered[1]?.count == 200)
        #expect(streamCredit >= 40 * 46 - 100, "all but the last unsent batch returned: \(streamCredit)")
        #expect(connectionCredit >= 40 * 46 - 400)
    }

    /// A stream whose earlier burst left credit below the batching threshold, then only
    /// padding-only frames: each is charged to its window, so each must count towards its
    /// credit too, or the window runs dry and no WINDOW_UPDATE ever comes (review finding).
    @Test("padding-only frames after a small message keep the stream's window open")
    func paddingOnlyAfterUnsentCredit() {
        var machine = Self.machine(.client, window: 100)  // stream threshold 50
        var output = Output()
        Self.feed(&machine, [Self.headers(1)], into: &output)
        let registered = machine.register(1)
        #expect(registered)
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 10))], into: &output)
        let first = machine.readComplete(isWritable: { _ in true })
        #expect(first.filter { $0.streamID == 1 }.isEmpty, "10 < 50: kept unsent")
        var streamCredit = 0
        // 20 bursts of one 10-byte padding-only frame: 200 bytes charged against a 100-byte window.
        for _ in 0..<20 {
            Self.feed(&machine, [Self.data(1, [], padding: 9)], into: &output)
            for update in machine.readComplete(isWritable: { _ in true }) where update.streamID == 1 {
                streamCredit += Int(update.increment)
            }
        }
        #expect(output.errors.isEmpty, "the peer never overran the window it was given: \(output.errors)")
        #expect(streamCredit >= 200 - 50, "credit returned in batches: \(streamCredit)")
    }

    @Test("inside a field block (HEADERS without END_HEADERS until its CONTINUATION) every frame goes to nio-http2")
    func fieldBlockNotInterleaved() {
        var machine = Self.machine(.server)
        var output = Output()
        Self.feed(&machine, [Self.preface, Self.headers(1)], into: &output)
        let registered = machine.register(1)
        #expect(registered)
        let open = Self.frame(0x1, flags: 0, stream: 3, [0x82])  // no END_HEADERS
        let data = Self.data(1, [1, 2, 3])
        let update = Self.frame(0x8, stream: 1, [0, 0, 0, 9])
        let continuation = Self.frame(0x9, flags: 0x4, stream: 3, [0x84])
        Self.feed(&machine, [open + data + update + continuation + data], into: &output)
        #expect(output.forwarded == Self.preface + Self.headers(1) + open + data + update + continuation,
                "the interleaved frames reach nio-http2, which rejects them (RFC 9113 §4.3)")
        #expect(output.windowUpdates.isEmpty, "not parsed inside the block")
        #expect(output.delivered[1] == [1, 2, 3], "after END_HEADERS DATA is taken again")
    }

    @Test("a stream forgotten in the middle of a frame returns the whole frame to the connection and drops its rest")
    func forgetMidFrame() {
        var machine = InboundDataSplicer(role: .client, streamWindow: 1000, connectionWindow: 1000, maximumFrameSize: 1 << 16)
        var output = Output()
        Self.feed(&machine, [Self.headers(1)], into: &output)
        let registered = machine.register(1)
        #expect(registered)
        let frame = Self.data(1, Array(repeating: 7, count: 600))
        Self.feed(&machine, [Array(frame[..<109])], into: &output)  // header + 100 bytes
        #expect(output.delivered[1]?.count == 100)
        let returned = machine.forget(1)
        #expect(returned.map(\.streamID) == [0] && returned.map(\.increment) == [600])
        Self.feed(&machine, [Array(frame[109...]) + Self.ping], into: &output)
        #expect(output.delivered[1]?.count == 100, "the rest of the frame is dropped")
        #expect(output.forwarded == Self.headers(1) + Self.ping)

        // Padded: the pad length byte and the padding come back when the pad length is read,
        // the unread payload when the stream is forgotten — each byte once.
        var padded = InboundDataSplicer(role: .client, streamWindow: 1000, connectionWindow: 1000, maximumFrameSize: 1 << 16)
        var paddedOutput = Output()
        Self.feed(&padded, [Self.headers(3)], into: &paddedOutput)
        let registeredPadded = padded.register(3)
        #expect(registeredPadded)
        let paddedFrame = Self.data(3, Array(repeating: 5, count: 300), padding: 200)  // 501 bytes charged
        Self.feed(&padded, [Array(paddedFrame[..<110])], into: &paddedOutput)  // header, pad length, 100 bytes
        let paddedReturned = padded.forget(3)
        #expect(paddedReturned.map(\.streamID) == [0] && paddedReturned.map(\.increment) == [501])
        Self.feed(&padded, [Array(paddedFrame[110...]) + Self.ping], into: &paddedOutput)
        #expect(paddedOutput.delivered[3]?.count == 100)
        #expect(paddedOutput.forwarded == Self.headers(3) + Self.ping)
    }

    @Test("a stream whose TCP side is full holds its own window, not the connection's")
    func slowStreamKeepsConnectionOpen() {
        var machine = InboundDataSplicer(role: .client, streamWindow: 1000, connectionWindow: 1000, maximumFrameSize: 1 << 16)
        var output = Output()
        Self.feed(&machine, [Self.headers(1), Self.headers(3)], into: &output)
        let registered = machine.register(1) && machine.register(3)
        #expect(registered)
        Self.feed(&machine, [Self.data(1, Array(repeating: 1, count: 600))], into: &output)
        let updates = machine.readComplete { $0 != 1 }  // stream 1's TCP side is full
        #expect(updates.map(\.streamID) == [0] && updates.map(\.increment) == [600], "connection credited, stream 1 not")
        // Stream 3 can still use the connection window: 1000 − 600 + 600.
        Self.feed(&machine, [Self.data(3, Array(repeating: 3, count: 900))], into: &output)
        #expect(output.errors.isEmpty)
        #expect(output.delivered[3]?.count == 900)
    }

    @Test("streams that never register are dropped beyond the tracking limit; registered ones are kept")
    func trackingLimit() {
        var machine = InboundDataSplicer(role: .server, streamWindow: 1000, connectionWindow: 4000, maximumFrameSize: 1 << 14, trackingLimit: 8)
        var output = Output()
        Self.feed(&machine, [Self.preface, Self.headers(1)], into: &output)
        let result14 = machine.register(1)
        #expect(result14)
        for stream in stride(from: Int32(3), through: 41, by: 2) { Self.feed(&machine, [Self.headers(stream)], into: &output) }
        #expect(machine.trackedStreams <= 8)
        #expect(machine.isSpliced(1))
    }
}
