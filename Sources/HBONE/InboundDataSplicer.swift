package import NIOCore

/// The inbound half of an HBONE connection's byte stream, split between swift-nio-http2 and
/// the tunnels: DATA frames of spliced tunnel streams are taken out and handed to their TCP
/// side directly, everything else goes on to `NIOHTTP2Handler` unchanged.
///
/// Why: every inbound byte through nio-http2 is copied once into its frame parser's buffer
/// and then passes its stream state machine, the multiplexer and a child channel's
/// pipeline; for a tunnel that is most of the user-space work per message
/// (`Docs/profiles.md`). A DATA payload taken here is a slice of the TLS plaintext buffer.
///
/// A value type that returns actions; ``DataSplicerHandler`` does the I/O. Rules:
///
/// - **Which frames.** Only DATA frames of a *registered* stream, without END_STREAM and not
///   above SETTINGS_MAX_FRAME_SIZE, are taken. A stream can be registered only if no DATA
///   of it has gone to nio-http2 yet, so bytes cannot overtake earlier ones still queued in
///   the stream's child channel. END_STREAM frames, trailers, RST_STREAM and every other
///   frame go to nio-http2, which keeps the stream's state; the stream's earlier payload has
///   been handed over by then, so order holds.
/// - **Flow control** (RFC 9113 §6.9). nio-http2 never sees the payload taken here, so it
///   neither charges its windows for it nor returns them; this type does both for those
///   bytes. Each taken frame's length (padding included, §6.9.1 "the entire DATA frame
///   payload is included in flow control") is charged to the stream and to the connection;
///   "A receiver MAY respond with a stream error or connection error of type
///   FLOW_CONTROL_ERROR" when a sender exceeds them — here a connection error. Bytes are
///   returned with WINDOW_UPDATE in batches of half a window, as nio-http2 does for the
///   frames it handles: to the connection once handed to the TCP side, to the stream once
///   the TCP side has taken them and is still writable (back-pressure: a slow reader holds
///   its own stream's window, not the connection's, which every stream shares).
/// - **Padding** (§6.1): the pad length byte and the padding are dropped and their window
///   returned at once; "If the length of the padding is the length of the frame payload or
///   greater, the recipient MUST treat this as a connection error … of type PROTOCOL_ERROR."
/// - A stream that goes away in the middle of a taken frame returns that frame's window;
///   the rest of the frame is dropped.
package struct InboundDataSplicer {
    /// Whose connection this is: a server first receives the 24-byte client preface.
    package enum Role: Sendable { case client, server }

    /// What to do with the next part of the input.
    package enum Action: Equatable {
        /// Bytes for nio-http2, in order.
        case forward(ByteBuffer)
        /// A DATA payload (or part of one) for a registered stream's TCP side.
        case deliver(streamID: Int32, ByteBuffer)
        /// A connection error: send GOAWAY with this code and close (RFC 9113 §5.4.1).
        case connectionError(code: UInt32, lastStreamID: Int32)
        /// A WINDOW_UPDATE frame, taken out of the input (``OutboundDataSplicer`` decides
        /// what nio-http2 gets of it); `frame` is the whole frame.
        case windowUpdate(streamID: Int32, increment: UInt32, frame: ByteBuffer)
        /// A SETTINGS frame (not an ACK), parsed; `frame` is the whole frame, still for
        /// nio-http2, which applies and acknowledges it.
        case settings([Setting], frame: ByteBuffer)
    }

    /// One SETTINGS parameter (RFC 9113 §6.5.1).
    package struct Setting: Equatable {
        package var identifier: UInt16
        package var value: UInt32
    }

    /// WINDOW_UPDATE frames to send: `(stream ID, increment)`, stream 0 for the connection.
    package typealias WindowUpdates = [(streamID: Int32, increment: UInt32)]

    static let frameHeaderLength = 9
    static let clientPrefaceLength = 24
    static let flowControlError: UInt32 = 0x3
    static let protocolError: UInt32 = 0x1
    static let frameSizeError: UInt32 = 0x6

    private enum FrameType {
        static let data: UInt8 = 0x0
        static let headers: UInt8 = 0x1
        static let rstStream: UInt8 = 0x3
        static let settings: UInt8 = 0x4
        static let pushPromise: UInt8 = 0x5
        static let windowUpdate: UInt8 = 0x8
        static let continuation: UInt8 = 0x9
    }

    private enum Flag {
        static let endStream: UInt8 = 0x1
        static let endHeaders: UInt8 = 0x4
        static let padded: UInt8 = 0x8
    }

    private enum Phase {
        /// Between frames: collecting a frame header.
        case header
        /// Inside a frame that nio-http2 handles (or the server's 24-byte client preface).
        case forwarding(remaining: Int)
        /// A padded DATA frame of a registered stream: its pad length byte is next.
        case padLength(streamID: Int32, frameLength: Int)
        /// Inside a registered stream's DATA frame: payload bytes, then padding to drop.
        case delivering(streamID: Int32, data: Int, padding: Int)
        /// Bytes of a taken frame whose window was already returned: its padding, or the
        /// rest of a frame whose stream was forgotten mid-frame. Dropped.
        case discarding(remaining: Int)
        /// The payload of a WINDOW_UPDATE or SETTINGS frame, collected in `captured`.
        case capturing(remaining: Int)
    }

    /// What is known of a stream that opened with HEADERS and has not ended.
    private struct Stream {
        /// Registered: its DATA is taken here.
        var spliced = false
        /// Some of its DATA went to nio-http2 (it can no longer be registered).
        var dataForwarded = false
        /// The sender's stream window as we granted it.
        var window = 0
        /// Taken in the current read burst, not yet judged for credit.
        var delivered = 0
        /// Taken while its TCP side was not writable: credited when it is again.
        var held = 0
        /// Credited, not yet sent (below the batching threshold).
        var unsent = 0
    }

    let role: Role
    /// The stream window we advertise (SETTINGS_INITIAL_WINDOW_SIZE).
    let streamWindow: Int
    /// The connection window nio-http2 keeps open (its target window).
    let connectionWindow: Int
    /// SETTINGS_MAX_FRAME_SIZE we advertise; larger frames go to nio-http2, which rejects them.
    let maximumFrameSize: Int
    /// Entries kept for streams that are not registered before unregistered ones are dropped.
    let trackingLimit: Int

    private var phase: Phase
    private var header: [UInt8] = []
    /// The frame being captured, header included.
    private var captured: [UInt8] = []
    private var streams: [Int32: Stream] = [:]
    /// Between a HEADERS or PUSH_PROMISE without END_HEADERS and the CONTINUATION with it.
    private var inFieldBlock = false
    /// Streams with bytes taken in the current read burst.
    private var touched: [Int32] = []
    /// Bytes taken here and not yet returned to the connection window.
    private var connectionOutstanding = 0
    /// Connection credit not yet sent.
    private var connectionUnsent = 0
    /// The highest stream ID the peer opened (for GOAWAY).
    private(set) var lastPeerStreamID: Int32 = 0

    package init(role: Role, streamWindow: Int, connectionWindow: Int, maximumFrameSize: Int, trackingLimit: Int = 1024) {
        self.role = role
        self.streamWindow = streamWindow
        self.connectionWindow = connectionWindow
        self.maximumFrameSize = maximumFrameSize
        self.trackingLimit = trackingLimit
        self.phase = role == .server ? .forwarding(remaining: Self.clientPrefaceLength) : .header
        self.header.reserveCapacity(Self.frameHeaderLength)
    }

    /// Whether `streamID` is registered.
    func isSpliced(_ streamID: Int32) -> Bool { self.streams[streamID]?.spliced ?? false }

    /// Streams with bytes taken in the current read burst.
    var touchedStreams: [Int32] { self.touched }

    /// Streams tracked (registered or not), for tests.
    var trackedStreams: Int { self.streams.count }

    // MARK: Registration

    /// Takes `streamID`'s DATA from now on. Refused (returns false) for a stream that has not
    /// opened, has ended, or already had DATA go to nio-http2.
    package mutating func register(_ streamID: Int32) -> Bool {
        guard var stream = self.streams[streamID], !stream.dataForwarded, !stream.spliced else { return false }
        stream.spliced = true
        stream.window = self.streamWindow
        self.streams[streamID] = stream
        return true
    }

    /// The stream is gone on our side (its channel closed): forget it, and return its
    /// taken bytes to the connection window.
    mutating func forget(_ streamID: Int32) -> WindowUpdates {
        self.end(streamID)
        return self.connectionCredit()
    }

    // MARK: Input

    /// The next action for `input`, consuming what it covers; nil once `input` is used up.
    /// Consecutive bytes for nio-http2 come as one slice.
    package mutating func next(_ input: inout ByteBuffer) -> Action? {
        var forwardStart: Int? = nil
        /// The bytes from `forwardStart` to `end` (already passed over), as one slice.
        func forwarded(_ input: inout ByteBuffer, upTo end: Int) -> Action? {
            guard let start = forwardStart, end > start else { return nil }
            let resume = input.readerIndex
            input.moveReaderIndex(to: start)
            let slice = input.readSlice(length: end - start)!
            input.moveReaderIndex(to: resume)
            return .forward(slice)
        }
        if case .capturing(remaining: 0) = self.phase { return self.captureComplete() }
        while input.readableBytes > 0 {
            switch self.phase {
            case .forwarding(let remaining):
                let count = min(remaining, input.readableBytes)
                if forwardStart == nil { forwardStart = input.readerIndex }
                input.moveReaderIndex(forwardBy: count)
                self.phase = remaining == count ? .header : .forwarding(remaining: remaining - count)

            case .header:
                let headerStart = input.readerIndex
                let header: HTTP2FrameHeader
                var fromCopy = false
                if self.header.isEmpty, input.readableBytes >= Self.frameHeaderLength {
                    // The whole header is in this buffer: read it in place.
                    header = HTTP2FrameHeader(input, at: headerStart)
                    input.moveReaderIndex(forwardBy: Self.frameHeaderLength)
                } else {
                    let count = min(Self.frameHeaderLength - self.header.count, input.readableBytes)
                    self.header += input.readBytes(length: count)!
                    // The rest of the header is in a later read; the part we have is not
                    // forwarded yet, since the frame may be one we take.
                    guard self.header.count == Self.frameHeaderLength else { return forwarded(&input, upTo: headerStart) }
                    header = HTTP2FrameHeader(ByteBuffer(bytes: self.header), at: 0)
                    fromCopy = true
                }
                switch self.frameStarts(header) {
                case .forward(let length):
                    self.phase = length == 0 ? .header : .forwarding(remaining: length)
                    if fromCopy {
                        // A header that spanned reads starts this input: forward our copy.
                        let bytes = ByteBuffer(bytes: self.header)
                        self.header.removeAll(keepingCapacity: true)
                        return .forward(bytes)
                    }
                    if forwardStart == nil { forwardStart = headerStart }
                case .take(let streamID, let length, let padded):
                    self.header.removeAll(keepingCapacity: true)
                    self.phase = padded
                        ? .padLength(streamID: streamID, frameLength: length)
                        : Self.afterPayload(streamID: streamID, data: length, padding: 0)
                    if let action = forwarded(&input, upTo: headerStart) { return action }
                case .capture(let length):
                    if !fromCopy, input.readableBytes >= length {
                        // The whole frame is in this input: taken as a slice, no copy. Bytes
                        // before it go first; the frame is read again on the next call.
                        input.moveReaderIndex(to: headerStart)
                        if let action = forwarded(&input, upTo: headerStart) { return action }
                        return Self.captured(input.readSlice(length: Self.frameHeaderLength + length)!)
                    }
                    if fromCopy {
                        self.captured = self.header
                    } else {
                        input.moveReaderIndex(to: headerStart)
                        self.captured = input.readBytes(length: Self.frameHeaderLength)!
                    }
                    self.header.removeAll(keepingCapacity: true)
                    self.phase = .capturing(remaining: length)
                    // An empty SETTINGS frame is complete now; the next call returns it.
                    if let action = forwarded(&input, upTo: headerStart) { return action }
                    if length == 0, let action = self.captureComplete() { return action }
                case .fail(let code):
                    // Frames before the bad one still reach nio-http2 (a stream's last DATA
                    // and END_STREAM among them); the bad frame is judged again on the next
                    // call, which changed nothing for it. Found by InboundDataSplicerFuzzTests.
                    if !fromCopy, let action = forwarded(&input, upTo: headerStart) {
                        input.moveReaderIndex(to: headerStart)
                        return action
                    }
                    return .connectionError(code: code, lastStreamID: self.lastPeerStreamID)
                }

            case .padLength(let streamID, let frameLength):
                let padding = Int(input.readInteger(as: UInt8.self)!)
                guard padding < frameLength else {
                    return .connectionError(code: Self.protocolError, lastStreamID: self.lastPeerStreamID)
                }
                // The pad length byte and the padding were charged with the frame and never
                // reach the TCP side: they are returned at once.
                self.creditDropped(streamID, 1 + padding)
                let data = frameLength - 1 - padding
                self.phase = Self.afterPayload(streamID: streamID, data: data, padding: padding)

            case .delivering(let streamID, let data, let padding):
                let count = min(data, input.readableBytes)
                let slice = input.readSlice(length: count)!
                self.phase = Self.afterPayload(streamID: streamID, data: data - count, padding: padding)
                self.noteDelivered(streamID, count)
                return .deliver(streamID: streamID, slice)

            case .discarding(let remaining):
                let count = min(remaining, input.readableBytes)
                input.moveReaderIndex(forwardBy: count)
                self.phase = remaining == count ? .header : .discarding(remaining: remaining - count)

            case .capturing(let remaining):
                let count = min(remaining, input.readableBytes)
                self.captured += input.readBytes(length: count)!
                self.phase = .capturing(remaining: remaining - count)
                if remaining == count, let action = self.captureComplete() { return action }
            }
        }
        return forwarded(&input, upTo: input.readerIndex)
    }

    /// A captured frame is complete: its action.
    private mutating func captureComplete() -> Action? {
        self.phase = .header
        let frame = ByteBuffer(bytes: self.captured)
        self.captured = []
        return Self.captured(frame)
    }

    /// The action for a whole WINDOW_UPDATE or SETTINGS frame.
    private static func captured(_ frame: ByteBuffer) -> Action {
        let start = frame.readerIndex
        let header = HTTP2FrameHeader(frame, at: start)
        if header.type == FrameType.windowUpdate {
            let increment = frame.getInteger(at: start + Self.frameHeaderLength, as: UInt32.self)!
            return .windowUpdate(streamID: header.streamID, increment: increment, frame: frame)
        }
        var settings: [Setting] = []
        var index = start + Self.frameHeaderLength
        while index + 6 <= start + frame.readableBytes {
            settings.append(Setting(
                identifier: frame.getInteger(at: index, as: UInt16.self)!,
                value: frame.getInteger(at: index + 2, as: UInt32.self)!
            ))
            index += 6
        }
        return .settings(settings, frame: frame)
    }

    /// Where a taken frame goes once `data` payload bytes are left: more payload, the
    /// padding (already credited), or the next frame.
    private static func afterPayload(streamID: Int32, data: Int, padding: Int) -> Phase {
        if data > 0 { return .delivering(streamID: streamID, data: data, padding: padding) }
        return padding > 0 ? .discarding(remaining: padding) : .header
    }

    private enum FrameDecision {
        case forward(length: Int)
        case take(streamID: Int32, length: Int, padded: Bool)
        /// WINDOW_UPDATE and SETTINGS frames well-formed enough to parse; malformed ones go
        /// to nio-http2, which reports them.
        case capture(length: Int)
        case fail(UInt32)
    }

    /// Decides where a frame goes from its header (RFC 9113 §4.1), and keeps the streams'
    /// bookkeeping: HEADERS opens a stream, END_STREAM and RST_STREAM end one.
    private mutating func frameStarts(_ header: HTTP2FrameHeader) -> FrameDecision {
        let (length, flags, streamID) = (header.length, header.flags, header.streamID)
        // RFC 9113 §4.3: a field block "MUST be transmitted as a contiguous sequence of
        // frames, with no interleaved frames of any other type or from any other stream".
        // Inside one, every frame goes to nio-http2, which answers anything but its
        // CONTINUATION with PROTOCOL_ERROR; taking a DATA frame here would hide it.
        if self.inFieldBlock {
            if header.type == FrameType.continuation, flags & Flag.endHeaders != 0 { self.inFieldBlock = false }
            return .forward(length: length)
        }
        if header.type == FrameType.headers || header.type == FrameType.pushPromise, flags & Flag.endHeaders == 0 {
            self.inFieldBlock = true
        }
        switch header.type {
        case FrameType.data:
            // Entries are changed in place, through their index: one lookup per frame.
            guard let index = self.streams.index(forKey: streamID) else { return .forward(length: length) }
            guard self.streams.values[index].spliced, flags & Flag.endStream == 0, length <= self.maximumFrameSize else {
                if flags & Flag.endStream != 0 {
                    self.end(streamID)
                } else {
                    self.streams.values[index].dataForwarded = true
                }
                return .forward(length: length)
            }
            // RFC 9113 §4.2: a frame too small for its mandatory fields (the pad length).
            if flags & Flag.padded != 0, length == 0 { return .fail(Self.frameSizeError) }
            guard length <= self.streams.values[index].window, self.connectionOutstanding + length <= self.connectionWindow else {
                return .fail(Self.flowControlError)
            }
            self.streams.values[index].window -= length
            self.connectionOutstanding += length
            return .take(streamID: streamID, length: length, padded: flags & Flag.padded != 0)
        case FrameType.headers:
            if self.role == .server, streamID > self.lastPeerStreamID { self.lastPeerStreamID = streamID }
            if flags & Flag.endStream != 0 {
                self.end(streamID)
            } else if self.streams[streamID] == nil, streamID != 0 {
                self.track(streamID)
            }
            return .forward(length: length)
        case FrameType.rstStream:
            self.end(streamID)
            return .forward(length: length)
        case FrameType.windowUpdate where length == 4:
            return .capture(length: length)
        case FrameType.settings where flags & 0x1 == 0 && streamID == 0 && length % 6 == 0 && length <= self.maximumFrameSize:
            return .capture(length: length)
        default:
            return .forward(length: length)
        }
    }

    private mutating func track(_ streamID: Int32) {
        if self.streams.count >= self.trackingLimit {
            // Streams that never registered (rejected, reset before the answer): drop them.
            self.streams = self.streams.filter { $0.value.spliced }
        }
        self.streams[streamID] = Stream()
    }

    /// The stream ended: what it took that the connection has not been credited for goes
    /// back now — bytes of the current read burst, and, when it ends in the middle of a
    /// taken frame (forgotten between reads), the rest of that frame, which is then dropped.
    /// Its stream credit is moot.
    private mutating func end(_ streamID: Int32) {
        guard let stream = self.streams.removeValue(forKey: streamID) else { return }
        self.connectionUnsent += stream.delivered
        switch self.phase {
        case .padLength(streamID, let frameLength):
            self.connectionUnsent += frameLength
            self.phase = .discarding(remaining: frameLength)
        case .delivering(streamID, let data, let padding):
            // The padding was returned with the pad length byte.
            self.connectionUnsent += data
            self.phase = .discarding(remaining: data + padding)
        default:
            break
        }
    }

    /// Charged bytes that never go to the TCP side (padding): credited at once.
    private mutating func creditDropped(_ streamID: Int32, _ count: Int) {
        self.connectionUnsent += count
        guard let index = self.streams.index(forKey: streamID) else { return }
        let stream = self.streams.values[index]
        // `unsent` may be left from an earlier burst, so only `delivered` (reset with
        // `touched`) says whether this burst already touched the stream.
        if stream.delivered == 0, !self.touched.contains(streamID) { self.touched.append(streamID) }
        self.streams.values[index].unsent += count
    }

    private mutating func noteDelivered(_ streamID: Int32, _ count: Int) {
        guard let index = self.streams.index(forKey: streamID) else { return }
        if self.streams.values[index].delivered == 0, !self.touched.contains(streamID) { self.touched.append(streamID) }
        self.streams.values[index].delivered += count
    }

    // MARK: Credit

    /// The read burst ended and each touched stream's TCP side flushed. The connection is
    /// credited for everything taken (as nio-http2 does for the frames it buffers: a slow
    /// reader must not hold the window every other stream shares); a stream is credited
    /// only while its TCP side is writable, and holds the rest until it is again.
    package mutating func readComplete(isWritable: (Int32) -> Bool) -> WindowUpdates {
        var updates: WindowUpdates = []
        for streamID in self.touched {
            guard let index = self.streams.index(forKey: streamID) else { continue }
            let delivered = self.streams.values[index].delivered
            self.connectionUnsent += delivered
            if isWritable(streamID) {
                self.streams.values[index].unsent += delivered
            } else {
                self.streams.values[index].held += delivered
            }
            self.streams.values[index].delivered = 0
            self.streamCredit(at: index, into: &updates)
        }
        self.touched.removeAll(keepingCapacity: true)
        updates += self.connectionCredit()
        return updates
    }

    /// `streamID`'s TCP side is writable again: credit what it held.
    mutating func becameWritable(_ streamID: Int32) -> WindowUpdates {
        guard let index = self.streams.index(forKey: streamID), self.streams.values[index].held > 0 else { return [] }
        self.streams.values[index].unsent += self.streams.values[index].held
        self.streams.values[index].held = 0
        var updates: WindowUpdates = []
        self.streamCredit(at: index, into: &updates)
        return updates + self.connectionCredit()
    }

    private mutating func streamCredit(at index: [Int32: Stream].Index, into updates: inout WindowUpdates) {
        let unsent = self.streams.values[index].unsent
        guard unsent > 0, unsent >= self.streamWindow / 2 else { return }
        updates.append((self.streams.keys[index], UInt32(unsent)))
        self.streams.values[index].window += unsent
        self.streams.values[index].unsent = 0
    }

    private mutating func connectionCredit() -> WindowUpdates {
        guard self.connectionUnsent > 0, self.connectionUnsent >= self.connectionWindow / 2 else { return [] }
        let increment = self.connectionUnsent
        self.connectionUnsent = 0
        self.connectionOutstanding -= increment
        return [(0, UInt32(increment))]
    }
}
