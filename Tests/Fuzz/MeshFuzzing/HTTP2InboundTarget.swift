internal import HBONE
internal import NIOCore

/// ``InboundDataSplicer`` and ``ErrorGoAwayWatch`` on hostile HTTP/2 bytes.
///
/// Input: one control byte (the stream window, how the bytes are cut, whether windows are
/// returned between reads), then the bytes that follow a valid opening — the client
/// preface, SETTINGS and HEADERS opening streams 1, 3 and 5, of which 1 and 3 are tunnels
/// whose DATA the splicer takes. Properties, for every input:
///
/// - the splicer consumes every byte it is given unless it reports a connection error, and
///   passes nothing on after one (RFC 9113 §5.4.1: the connection is closing);
/// - it never hands on more bytes than it was given;
/// - the outcome does not depend on how the bytes were cut: whole, or in pieces of the
///   size the control byte picks (what TLS records and socket reads do to a byte stream);
/// - the GOAWAY watch finds, however the bytes are cut, the error code of the first GOAWAY
///   frame with a non-zero code in a frame-by-frame walk of the bytes (§4.1, §6.8).
enum HTTP2InboundTarget {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let maximumFrameSize = 1 << 16
    static let registered: [Int32] = [1, 3]

    static func frame(_ type: UInt8, flags: UInt8 = 0, stream: Int32, _ payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [
            UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
            UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff),
        ] + payload
    }

    /// Preface, SETTINGS (SETTINGS_INITIAL_WINDOW_SIZE 0x400000), HEADERS on 1, 3 and 5
    /// (END_HEADERS; `:method GET`, `:path /` from the static table).
    static let opening = preface + frame(0x4, stream: 0, [0, 4, 0, 0x40, 0, 0])
        + [1, 3, 5].flatMap { frame(0x1, flags: 0x4, stream: $0, [0x82, 0x84]) }

    /// Piece sizes the control byte picks from.
    static let pieceSizes = [1, 2, 3, 5, 9, 17, 64, 1000]

    struct Outcome: Equatable {
        var forwarded: [UInt8] = []
        var delivered: [Int32: [UInt8]] = [:]
        var errors: [UInt32] = []
        var settings: [InboundDataSplicer.Setting] = []
        var windowUpdates: [String] = []
    }

    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let control = reader.byte()
        let window = control & 1 == 0 ? 4096 : 1 << 20
        let pieceSize = Self.pieceSizes[Int(control >> 1 & 7)]
        let returnsWindows = control & 0x10 != 0
        let tail = reader.rest

        let whole = try Self.feed(tail, pieceSize: tail.count, window: window, returnsWindows: returnsWindows)
        let pieces = try Self.feed(tail, pieceSize: pieceSize, window: window, returnsWindows: returnsWindows)
        if !returnsWindows {
            // Returning windows between reads depends on where the reads end, by design.
            try require(whole == pieces, "the outcome depends on the cuts (pieces of \(pieceSize)):\n\(whole)\n\(pieces)")
        }
        let total = whole.forwarded.count + whole.delivered.values.reduce(0) { $0 + $1.count }
        try require(total <= Self.opening.count + tail.count, "\(total) bytes out of \(Self.opening.count + tail.count) in")

        let expected = Self.firstErrorGoAway(tail)
        for size in [tail.count, pieceSize, 1] {
            var watch = ErrorGoAwayWatch(role: .server)
            var start = 0
            while start < tail.count {
                let end = min(tail.count, start + max(size, 1))
                watch.observe(ByteBuffer(bytes: tail[start..<end]))
                start = end
            }
            try require(
                watch.errorCode == expected,
                "GOAWAY watch in pieces of \(size): \(String(describing: watch.errorCode)), a walk finds \(String(describing: expected))"
            )
        }
        return whole.errors.isEmpty
    }

    /// The opening, the registrations, then `tail` in pieces of `pieceSize`.
    static func feed(_ tail: [UInt8], pieceSize: Int, window: Int, returnsWindows: Bool) throws(FuzzFailure) -> Outcome {
        var machine = InboundDataSplicer(
            role: .server, streamWindow: window, connectionWindow: 4 * window, maximumFrameSize: Self.maximumFrameSize
        )
        var outcome = Outcome()
        guard try Self.feed(Self.opening, into: &machine, &outcome), outcome.errors.isEmpty else {
            throw FuzzFailure("the valid opening was refused: \(outcome.errors)")
        }
        for stream in Self.registered {
            try require(machine.register(stream), "stream \(stream) could not be registered")
        }
        var start = 0
        while start < tail.count {
            let end = min(tail.count, start + max(pieceSize, 1))
            guard try Self.feed(Array(tail[start..<end]), into: &machine, &outcome) else { break }
            if returnsWindows {
                outcome.windowUpdates += machine.readComplete { _ in true }.map { "\($0.streamID)+\($0.increment)" }
            }
            start = end
        }
        return outcome
    }

    /// Feeds one read; false after a connection error.
    static func feed(_ bytes: [UInt8], into machine: inout InboundDataSplicer, _ outcome: inout Outcome) throws(FuzzFailure) -> Bool {
        var buffer = ByteBuffer(bytes: bytes)
        while let action = machine.next(&buffer) {
            switch action {
            case .forward(let bytes):
                try require(bytes.readableBytes > 0, "an empty forward")
                outcome.forwarded += bytes.readableBytesView
            case .deliver(let stream, let bytes):
                try require(Self.registered.contains(stream), "DATA delivered to stream \(stream), which is no tunnel")
                outcome.delivered[stream, default: []] += bytes.readableBytesView
            case .connectionError(let code, _):
                try require([0x1, 0x3, 0x6].contains(code), "connection error code \(code) is not one RFC 9113 names here")
                outcome.errors.append(code)
                return false
            case .windowUpdate(let stream, let increment, let frame):
                outcome.forwarded += frame.readableBytesView
                outcome.windowUpdates.append("peer \(stream)+\(increment)")
            case .settings(let settings, let frame):
                outcome.forwarded += frame.readableBytesView
                outcome.settings += settings
            }
        }
        try require(buffer.readableBytes == 0, "\(buffer.readableBytes) bytes left unread without an error")
        return true
    }

    /// The error code of the first GOAWAY with a non-zero code, walking `bytes` frame by frame.
    static func firstErrorGoAway(_ bytes: [UInt8]) -> UInt32? {
        var index = 0
        while bytes.count - index >= 9 {
            let length = Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
            if bytes[index + 3] == 0x7, length >= 8 {
                guard bytes.count - index >= 17 else { return nil }
                let code = bytes[(index + 13)..<(index + 17)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                if code != 0 { return code }
            }
            index += 9 + length
        }
        return nil
    }
}
