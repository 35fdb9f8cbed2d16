internal import NIOCore

/// The outbound half of an HBONE connection's byte stream, shared between swift-nio-http2
/// and the tunnels: a spliced tunnel's bytes are framed as DATA here and written below
/// `NIOHTTP2Handler`, everything else is nio-http2's own output, passed through.
///
/// Why: the stream channel, the multiplexer and nio-http2's outbound frame processing were
/// about a quarter of the instructions a 1 KiB request cost an endpoint (`Docs/profiles.md`).
///
/// A value type that returns what to write; `DataSplicerHandler` does the I/O. Rules:
///
/// - **Flow control** (RFC 9113 §6.9: "A sender MUST NOT send a flow-controlled frame with a
///   length that exceeds the space available in either of the flow-control windows
///   advertised by the receiver"). This type keeps the peer's windows as they really are:
///   the connection window, charged for every DATA frame on the wire, ours and nio-http2's,
///   and the stream windows of spliced streams. nio-http2 keeps its own view and is told
///   only what it can use: WINDOW_UPDATE frames for spliced streams are taken out of its
///   input, and connection WINDOW_UPDATEs reach it only as far as the real window is above
///   its view, so its view never exceeds 2^31−1 (§6.9.1); it gets its share of each
///   update before the spliced streams are served. A DATA frame of nio-http2's that the
///   real window does not admit yet waits here, with the later frames of its stream and
///   later DATA frames; its other frames (SETTINGS, PING, HEADERS, WINDOW_UPDATE, GOAWAY,
///   other streams' RST_STREAM) go on. Waiting frames go first when window comes.
/// - **Settings** (§6.5.2): SETTINGS_INITIAL_WINDOW_SIZE changes move every spliced
///   stream's window by the difference (§6.9.2: "An endpoint MUST treat a change to
///   SETTINGS_INITIAL_WINDOW_SIZE that causes any flow-control window to exceed the maximum
///   size as a connection error of type FLOW_CONTROL_ERROR"); frames never exceed the peer's
///   SETTINGS_MAX_FRAME_SIZE (§4.2).
/// - **Which streams.** A stream is spliced only after nio-http2 wrote its HEADERS and
///   before it wrote any DATA of it, so the frames of a stream stay in order. Its
///   END_STREAM still goes through nio-http2, which keeps the stream's state, once every
///   byte queued here is written.
/// - **Queues.** A spliced stream's bytes that its or the connection's window does not
///   admit wait here, and the stream's TCP side is not read meanwhile (back-pressure); they
///   are sent as WINDOW_UPDATEs arrive, streams in the order they started waiting.
struct OutboundDataSplicer {
    /// Bytes to write, in order, and what changed for the streams.
    struct Output {
        /// Frame bytes to write below nio-http2, in order.
        var writes: [ByteBuffer] = []
        /// Spliced streams whose queue emptied (their TCP side may be read again, a waiting
        /// END_STREAM may go).
        var drained: [Int32] = []
        /// How many bytes of nio-http2's held output (the oldest first) may go now; they go
        /// before `writes`.
        var nioRelease = 0

        var isEmpty: Bool { self.writes.isEmpty && self.drained.isEmpty && self.nioRelease == 0 }

        /// Empties it, keeping the arrays' storage for the next use.
        mutating func reset() {
            guard !self.isEmpty else { return }
            self.writes.removeAll(keepingCapacity: true)
            self.drained.removeAll(keepingCapacity: true)
            self.nioRelease = 0
        }
    }

    /// A run of consecutive bytes of one of nio-http2's writes: to the wire now, or held.
    struct NioRun: Equatable {
        var count: Int
        var held: Bool
    }

    /// What to do with a WINDOW_UPDATE frame from the peer.
    enum WindowUpdateVerdict: Equatable {
        /// Pass it on to nio-http2 as it is.
        case forward
        /// Pass it on with a smaller increment (the rest was used by spliced frames).
        case forwardIncrement(UInt32)
        /// Keep it from nio-http2 (the window is one it does not use).
        case drop
        /// A connection error (RFC 9113 §6.9.1: the connection's window above 2^31−1).
        case connectionError(code: UInt32)
        /// A stream error (§6.9.1: a spliced stream's window above 2^31−1): the stream is to
        /// be reset with RST_STREAM `code`, through nio-http2, which keeps its state. Its
        /// queued bytes are dropped and it is marked ended; nothing more is sent on it.
        case streamError(code: UInt32)
    }

    /// RFC 9113 §6.9.1: "The maximum size of a flow-control window is 2^31-1 octets."
    static let maximumWindow = Int(Int32.max)
    /// RFC 9113 §6.5.2 defaults, in force until the peer's SETTINGS say otherwise.
    static let defaultInitialWindow = 65_535
    static let defaultMaximumFrameSize = 16_384
    /// Payloads up to this size are copied behind their frame header (one buffer, one TLS
    /// record); larger ones are written as they are, after a separate header.
    static let copyLimit = 4096

    private struct Stream {
        /// The peer's window for this stream, as far as we know it.
        var window: Int
        /// Its DATA goes through here.
        var spliced = false
        /// nio-http2 wrote DATA of it: it can no longer be spliced.
        var nioData = false
        /// Our END_STREAM or RST_STREAM went out: kept (spliced streams only) so the peer's
        /// WINDOW_UPDATEs for it are still kept from nio-http2 until the channel closes.
        var ended = false
        /// Bytes waiting for window.
        var queue: [ByteBuffer] = []
        var queued = 0
    }

    private enum NioPhase {
        /// A frame header is next.
        case header
        /// The 24-byte client connection preface, or the payload of a frame that went on.
        case passing(Int)
        /// The payload of a held frame.
        case holding(Int)
    }

    /// One of nio-http2's frames that waits.
    private struct HeldFrame {
        var header: HTTP2FrameHeader
        /// Payload bytes nio-http2 has not written yet.
        var missing: Int
        var flowControlled: Int { self.header.type == 0x0 ? self.header.length : 0 }
    }

    private(set) var peerInitialWindow = Self.defaultInitialWindow
    private(set) var peerMaximumFrameSize = Self.defaultMaximumFrameSize
    /// The peer's connection window: what may still be sent.
    private(set) var connectionWindow = Self.defaultInitialWindow
    /// nio-http2's view of the same window (it never sees spliced frames).
    private(set) var nioConnectionWindow = Self.defaultInitialWindow
    /// nio-http2's frames that wait, oldest first, and how many per stream.
    private var held: [HeldFrame] = []
    private var heldPerStream: [Int32: Int] = [:]
    /// Held DATA frames with payload: while there are any, spliced bytes wait too.
    private(set) var heldDataFrames = 0
    /// Increments the peer gave streams before we tracked them (a stream it opened gets a
    /// WINDOW_UPDATE before our HEADERS): applied when it is tracked. Bounded.
    private var earlyCredit: [Int32: Int] = [:]
    /// Entries kept for streams that are not spliced before unspliced ones are dropped.
    let trackingLimit: Int

    private var streams: [Int32: Stream] = [:]
    /// Spliced streams with queued bytes, in the order they are served.
    private var waiting: [Int32] = []
    private var nioPhase: NioPhase
    private let allocator = ByteBufferAllocator()

    init(role: InboundDataSplicer.Role, trackingLimit: Int = 1024) {
        self.trackingLimit = trackingLimit
        // nio-http2 starts a client connection with the preface, which is not a frame.
        self.nioPhase = role == .client ? .passing(InboundDataSplicer.clientPrefaceLength) : .header
    }

    /// Whether `streamID`'s DATA goes through here.
    func isSpliced(_ streamID: Int32) -> Bool {
        guard let stream = self.streams[streamID] else { return false }
        return stream.spliced && !stream.ended
    }

    /// Bytes of `streamID` waiting for window.
    func queuedBytes(_ streamID: Int32) -> Int { self.streams[streamID]?.queued ?? 0 }

    /// The peer's window for `streamID`, if the stream is tracked.
    func streamWindow(_ streamID: Int32) -> Int? { self.streams[streamID]?.window }

    /// Streams tracked (spliced or not), for tests.
    var trackedStreams: Int { self.streams.count }

    // MARK: Streams

    /// Takes `streamID`'s DATA from now on. Refused for a stream whose HEADERS nio-http2 has
    /// not written, that has ended, or that already had DATA from nio-http2.
    mutating func register(_ streamID: Int32) -> Bool {
        guard var stream = self.streams[streamID], !stream.spliced, !stream.nioData, !stream.ended,
            self.heldPerStream[streamID] == nil
        else { return false }
        stream.spliced = true
        self.streams[streamID] = stream
        return true
    }

    /// The stream's channel closed: its queued bytes are dropped.
    mutating func forget(_ streamID: Int32) {
        self.streams.removeValue(forKey: streamID)
        self.waiting.removeAll { $0 == streamID }
    }

    /// Bytes of a spliced stream's TCP side: framed now as far as the windows admit, the
    /// rest queued. Returns whether bytes of the stream wait (until it is in
    /// ``Output/drained``).
    @discardableResult
    mutating func send(_ streamID: Int32, _ bytes: ByteBuffer, into output: inout Output) -> Bool {
        guard let index = self.streams.index(forKey: streamID),
            self.streams.values[index].spliced, !self.streams.values[index].ended
        else { return false }
        guard self.streams.values[index].queued == 0 else {
            // Behind bytes that already wait.
            self.streams.values[index].queue.append(bytes)
            self.streams.values[index].queued += bytes.readableBytes
            return true
        }
        var bytes = bytes
        self.frame(&bytes, at: index, into: &output)
        guard bytes.readableBytes > 0 else { return false }
        self.streams.values[index].queue.append(bytes)
        self.streams.values[index].queued = bytes.readableBytes
        self.waiting.append(streamID)
        return true
    }

    // MARK: From the peer

    /// A WINDOW_UPDATE from the peer (RFC 9113 §6.9); may let queued bytes go.
    mutating func windowUpdate(streamID: Int32, increment: UInt32, into output: inout Output) -> WindowUpdateVerdict {
        let increment = Int(increment & 0x7fff_ffff)
        // §6.9: "A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a
        // flow-control window increment of 0 as a stream error" — nio-http2's to report.
        guard increment > 0 else { return .forward }
        if streamID == 0 {
            guard self.connectionWindow + increment <= Self.maximumWindow else {
                return .connectionError(code: InboundDataSplicer.flowControlError)
            }
            self.connectionWindow += increment
            self.releaseHeld(into: &output)
            // nio-http2 learns of window it can use — up to the real window, never above
            // it — before the spliced streams take theirs, so it is not starved.
            let forwarded = max(0, min(increment, self.connectionWindow - self.nioConnectionWindow))
            self.nioConnectionWindow += forwarded
            self.drainAll(into: &output)
            return forwarded == increment ? .forward : forwarded == 0 ? .drop : .forwardIncrement(UInt32(forwarded))
        }
        guard let index = self.streams.index(forKey: streamID) else {
            self.noteEarlyCredit(streamID, increment)
            return .forward
        }
        guard self.streams.values[index].spliced else {
            // nio-http2 keeps this stream's window and reports an overflow itself.
            self.streams.values[index].window = min(self.streams.values[index].window + increment, Self.maximumWindow)
            return .forward
        }
        // Our END_STREAM or RST_STREAM went out: nothing more to send on it.
        guard !self.streams.values[index].ended else { return .drop }
        // §6.9.1: "If a sender receives a WINDOW_UPDATE that causes a flow-control window to
        // exceed this maximum, it MUST terminate either the stream or the connection, as
        // appropriate. For streams, the sender sends a RST_STREAM with an error code of
        // FLOW_CONTROL_ERROR" — the other tunnels on the connection go on.
        guard self.streams.values[index].window + increment <= Self.maximumWindow else {
            self.end(streamID)
            return .streamError(code: InboundDataSplicer.flowControlError)
        }
        self.streams.values[index].window += increment
        if self.streams.values[index].queued > 0 { self.drain(streamID, into: &output) }
        return .drop
    }

    /// The peer's SETTINGS (RFC 9113 §6.5.2); values out of range are left to nio-http2,
    /// which treats them as connection errors. Returns a connection error code, if any.
    mutating func settings(_ entries: [InboundDataSplicer.Setting], into output: inout Output) -> UInt32? {
        for entry in entries {
            let value = entry.value
            switch entry.identifier {
            case 0x4 where Int(value) <= Self.maximumWindow:  // SETTINGS_INITIAL_WINDOW_SIZE
                let delta = Int(value) - self.peerInitialWindow
                self.peerInitialWindow = Int(value)
                // Only open spliced streams' windows are ours to judge: an ended one has no
                // window left (found by fuzzing: a tombstone's stale window turned a valid
                // SETTINGS into an error), and nio-http2 judges the streams it sends on —
                // one the peer reset stays here, unjudged, until the tracking limit.
                for index in self.streams.indices where !self.streams.values[index].ended {
                    let window = self.streams.values[index].window + delta
                    guard self.streams.values[index].spliced else {
                        self.streams.values[index].window = min(window, Self.maximumWindow)
                        continue
                    }
                    if window > Self.maximumWindow { return InboundDataSplicer.flowControlError }
                    self.streams.values[index].window = window
                }
            case 0x5 where (1 << 14)...(1 << 24 - 1) ~= Int(value):  // SETTINGS_MAX_FRAME_SIZE
                self.peerMaximumFrameSize = Int(value)
            default:
                break
            }
        }
        self.drainAll(into: &output)
        return nil
    }

    // MARK: From nio-http2

    /// nio-http2 wrote `bytes`: appends to `runs` which of them go to the wire now and which
    /// are held (a DATA frame the connection window does not admit yet, or a frame behind
    /// one of its stream's that waits). Returns how many bytes at the end are an incomplete
    /// frame header, to be offered again in front of the next write. Afterwards
    /// ``takeRelease()`` says whether held bytes may go.
    mutating func admitNio(_ bytes: ByteBuffer, into runs: inout [NioRun]) -> Int {
        var offset = 0
        let count = bytes.readableBytes
        func run(_ length: Int, held: Bool) {
            if let last = runs.last, last.held == held {
                runs[runs.count - 1].count += length
            } else {
                runs.append(NioRun(count: length, held: held))
            }
        }
        while offset < count {
            switch self.nioPhase {
            case .passing(let remaining):
                let length = min(remaining, count - offset)
                run(length, held: false)
                offset += length
                self.nioPhase = remaining == length ? .header : .passing(remaining - length)
            case .holding(let remaining):
                let length = min(remaining, count - offset)
                run(length, held: true)
                offset += length
                self.held[self.held.count - 1].missing -= length
                self.nioPhase = remaining == length ? .header : .holding(remaining - length)
            case .header:
                guard count - offset >= InboundDataSplicer.frameHeaderLength else { return count - offset }
                let header = HTTP2FrameHeader(bytes, at: bytes.readerIndex + offset)
                offset += InboundDataSplicer.frameHeaderLength
                if self.mustHold(header) {
                    self.held.append(HeldFrame(header: header, missing: header.length))
                    self.heldPerStream[header.streamID, default: 0] += 1
                    if header.type == 0x0, header.length > 0 {
                        self.heldDataFrames += 1
                        // nio-http2 charged its own view when it wrote the frame.
                        self.nioConnectionWindow -= header.length
                    }
                    run(InboundDataSplicer.frameHeaderLength, held: true)
                    self.nioPhase = header.length == 0 ? .header : .holding(header.length)
                } else {
                    if header.type == 0x0 { self.nioConnectionWindow -= header.length }
                    self.commitNio(header)
                    run(InboundDataSplicer.frameHeaderLength, held: false)
                    self.nioPhase = header.length == 0 ? .header : .passing(header.length)
                }
            }
        }
        return 0
    }

    /// A payload nio-http2 wrote as something other than a byte buffer (a file region):
    /// whether it is held.
    mutating func admitNioPayload(count: Int) -> Bool {
        switch self.nioPhase {
        case .passing(let remaining):
            self.nioPhase = remaining <= count ? .header : .passing(remaining - count)
            return false
        case .holding(let remaining):
            self.held[self.held.count - 1].missing -= min(remaining, count)
            self.nioPhase = remaining <= count ? .header : .holding(remaining - count)
            return true
        case .header:
            return false
        }
    }

    /// Bytes of held output that may go now (the oldest frames, complete, within the
    /// window): to be written before anything else.
    mutating func takeRelease() -> Int {
        var output = Output()
        self.releaseHeld(into: &output)
        return output.nioRelease
    }

    /// Whether one of nio-http2's frames must wait (RFC 9113 §6.9.1 for DATA; the order of
    /// a stream's frames, §5.1, for the rest).
    private func mustHold(_ header: HTTP2FrameHeader) -> Bool {
        if header.streamID != 0, self.heldPerStream[header.streamID] != nil { return true }
        guard header.type == 0x0, header.length > 0 else { return false }
        return self.heldDataFrames > 0 || header.length > self.connectionWindow
    }

    /// Releases held frames from the oldest while they are complete and fit the window.
    private mutating func releaseHeld(into output: inout Output) {
        var released = 0
        // Removed in one go at the end: many frames can wait while the window is closed.
        defer { self.held.removeFirst(released) }
        while released < self.held.count, self.held[released].missing == 0 {
            let frame = self.held[released]
            let length = frame.flowControlled
            if length > 0 {
                guard length <= self.connectionWindow else { return }
                self.heldDataFrames -= 1
            }
            released += 1
            let streamID = frame.header.streamID
            if let count = self.heldPerStream[streamID], count > 1 {
                self.heldPerStream[streamID] = count - 1
            } else {
                self.heldPerStream.removeValue(forKey: streamID)
            }
            self.commitNio(frame.header)
            output.nioRelease += InboundDataSplicer.frameHeaderLength + frame.header.length
        }
    }

    /// One of nio-http2's frames goes to the wire: charge DATA to the windows, and keep the
    /// streams' bookkeeping (HEADERS opens a stream for us, END_STREAM and RST_STREAM end
    /// our side).
    private mutating func commitNio(_ header: HTTP2FrameHeader) {
        let endStream = header.flags & 0x1 != 0
        switch header.type {
        case 0x0:  // DATA
            if header.length > 0 {
                self.connectionWindow -= header.length
                if let index = self.streams.index(forKey: header.streamID) {
                    self.streams.values[index].window -= header.length
                    self.streams.values[index].nioData = true
                }
            }
            if endStream { self.end(header.streamID) }
        case 0x1:  // HEADERS
            if endStream {
                self.end(header.streamID)
            } else if self.streams[header.streamID] == nil, header.streamID != 0 {
                self.track(header.streamID)
            }
        case 0x3:  // RST_STREAM
            self.end(header.streamID)
        default:
            break
        }
    }

    private mutating func track(_ streamID: Int32) {
        if self.streams.count >= self.trackingLimit {
            self.streams = self.streams.filter { $0.value.spliced }
        }
        let credit = self.earlyCredit.removeValue(forKey: streamID) ?? 0
        self.streams[streamID] = Stream(window: min(self.peerInitialWindow + credit, Self.maximumWindow))
    }

    private mutating func noteEarlyCredit(_ streamID: Int32, _ increment: Int) {
        if self.earlyCredit[streamID] == nil, self.earlyCredit.count >= 64 { self.earlyCredit.removeAll() }
        self.earlyCredit[streamID, default: 0] += increment
    }

    /// Our side of the stream ended (END_STREAM or RST_STREAM written by nio-http2). A
    /// spliced stream sends END_STREAM only once its queue is empty, and stays as a
    /// tombstone until its channel closes (``forget(_:)``).
    private mutating func end(_ streamID: Int32) {
        guard let index = self.streams.index(forKey: streamID), self.streams.values[index].spliced else {
            self.streams.removeValue(forKey: streamID)
            return
        }
        self.streams.values[index].ended = true
        self.streams.values[index].queue.removeAll()
        self.streams.values[index].queued = 0
        self.waiting.removeAll { $0 == streamID }
    }

    // MARK: Framing

    private mutating func drainAll(into output: inout Output) {
        guard self.heldDataFrames == 0 else { return }
        for streamID in self.waiting {
            guard self.connectionWindow > 0 else { return }
            self.drain(streamID, into: &output)
        }
    }

    /// Frames as much of `streamID`'s queue as the windows admit.
    private mutating func drain(_ streamID: Int32, into output: inout Output) {
        guard self.heldDataFrames == 0, let index = self.streams.index(forKey: streamID) else { return }
        while var first = self.streams.values[index].queue.first {
            let before = first.readableBytes
            self.frame(&first, at: index, into: &output)
            self.streams.values[index].queued -= before - first.readableBytes
            guard first.readableBytes == 0 else {
                self.streams.values[index].queue[0] = first
                return
            }
            self.streams.values[index].queue.removeFirst()
        }
        self.waiting.removeAll { $0 == streamID }
        output.drained.append(streamID)
    }

    /// Frames as much of `bytes` as the windows admit (RFC 9113 §6.9.1) in frames of at
    /// most the peer's SETTINGS_MAX_FRAME_SIZE, and consumes what it framed.
    private mutating func frame(
        _ bytes: inout ByteBuffer, at index: Dictionary<Int32, Stream>.Index, into output: inout Output
    ) {
        guard self.heldDataFrames == 0 else { return }
        let streamID = self.streams.keys[index]
        while bytes.readableBytes > 0 {
            let length = min(
                bytes.readableBytes, self.streams.values[index].window, self.connectionWindow, self.peerMaximumFrameSize
            )
            guard length > 0 else { return }
            let payload = bytes.readSlice(length: length)!
            let copied = length <= Self.copyLimit
            var frame = self.allocator.buffer(capacity: InboundDataSplicer.frameHeaderLength + (copied ? length : 0))
            HTTP2FrameHeader.write(length: length, type: 0x0, flags: 0, streamID: streamID, into: &frame)
            if copied {
                frame.writeImmutableBuffer(payload)
                output.writes.append(frame)
            } else {
                output.writes.append(frame)
                output.writes.append(payload)
            }
            self.streams.values[index].window -= length
            self.connectionWindow -= length
        }
    }
}

/// An HTTP/2 frame header (RFC 9113 §4.1): 24-bit length, type, flags, R bit and 31-bit
/// stream ID.
struct HTTP2FrameHeader {
    var length: Int
    var type: UInt8
    var flags: UInt8
    var streamID: Int32

    init(_ buffer: ByteBuffer, at index: Int) {
        let high = Int(buffer.getInteger(at: index, as: UInt16.self)!)
        self.length = high << 8 | Int(buffer.getInteger(at: index + 2, as: UInt8.self)!)
        self.type = buffer.getInteger(at: index + 3, as: UInt8.self)!
        self.flags = buffer.getInteger(at: index + 4, as: UInt8.self)!
        self.streamID = Int32(bitPattern: buffer.getInteger(at: index + 5, as: UInt32.self)! & 0x7fff_ffff)
    }

    static func write(length: Int, type: UInt8, flags: UInt8, streamID: Int32, into buffer: inout ByteBuffer) {
        // Two integer writes instead of five: each costs a bounds and uniqueness check.
        let stream = UInt64(UInt32(bitPattern: streamID) & 0x7fff_ffff)
        let first = UInt64(length & 0xff_ffff) << 40 | UInt64(type) << 32 | UInt64(flags) << 24 | stream >> 8
        buffer.writeInteger(first)
        buffer.writeInteger(UInt8(truncatingIfNeeded: stream))
    }
}
