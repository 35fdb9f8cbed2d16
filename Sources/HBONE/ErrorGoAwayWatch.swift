package import NIOCore

/// Notices when nio-http2 has sent a GOAWAY for an error, so the connection gets closed.
///
/// RFC 9113 §5.4.1: "After sending the GOAWAY frame for an error condition, the endpoint
/// MUST close the TCP connection." On a connection error (a DATA frame on stream 0, a
/// zero WINDOW_UPDATE increment, a broken header block, a SETTINGS value out of range)
/// `NIOHTTP2Handler` writes that GOAWAY and reports the error, but leaves the connection
/// open: closing is the application's call, and the error it reports does not say whether
/// it was the connection's or one stream's (a stream error must not close the connection,
/// whose other tunnels are fine). The GOAWAY on the wire does say it.
///
/// A value type that walks nio-http2's outbound bytes frame by frame (RFC 9113 §4.1) and
/// reads each GOAWAY's error code (§6.8: last stream ID, then the code). NO_ERROR is a
/// graceful shutdown and keeps the connection for its drain. ``DataSplicerHandler`` and
/// ``RecordCoalescer``, which sit directly below `NIOHTTP2Handler`, feed it and close the
/// connection after the flush that carries such a GOAWAY.
package struct ErrorGoAwayWatch {
    /// GOAWAY's type (RFC 9113 §6.8).
    static let goAway: UInt8 = 0x7
    /// A frame header and the first eight octets of a GOAWAY's payload.
    private static let goAwayPrefix = InboundDataSplicer.frameHeaderLength + 8

    /// Bytes of the current frame's payload still to pass over.
    private var skipping = 0
    /// The start of a frame cut between writes, collected so far.
    private var collected: [UInt8] = []
    /// The error code of a GOAWAY nio-http2 sent for an error, once it has.
    package private(set) var errorCode: UInt32?

    /// A client's first bytes are the connection preface (RFC 9113 §3.4), not a frame.
    package init(role: InboundDataSplicer.Role) {
        self.skipping = role == .client ? InboundDataSplicer.clientPrefaceLength : 0
    }

    /// nio-http2 wrote `buffer`.
    package mutating func observe(_ buffer: ByteBuffer) {
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        while index < end {
            if self.skipping > 0 {
                let count = min(self.skipping, end - index)
                self.skipping -= count
                index += count
                continue
            }
            if self.collected.isEmpty, let step = self.frameStart(in: buffer, at: index, end: end) {
                index += step
                continue
            }
            // A frame start cut between writes (nio-http2 does not cut them, but nothing
            // here relies on it): its header collected, then a GOAWAY's fixed fields, never
            // more, and read the same way.
            let wanted = self.collected.count < InboundDataSplicer.frameHeaderLength
                ? InboundDataSplicer.frameHeaderLength : Self.goAwayPrefix
            let count = min(wanted - self.collected.count, end - index)
            self.collected += buffer.getBytes(at: index, length: count)!
            index += count
            guard self.collected.count == wanted else { return }
            if self.frameStart(in: ByteBuffer(bytes: self.collected), at: 0, end: wanted) != nil {
                self.collected.removeAll(keepingCapacity: true)
            }
        }
    }

    /// A frame start read in place, without collecting (nio-http2 writes each frame's
    /// header, with a GOAWAY's fixed fields, in one buffer): how many bytes it took, or nil
    /// if the buffer ends first.
    private mutating func frameStart(in buffer: ByteBuffer, at index: Int, end: Int) -> Int? {
        guard end - index >= InboundDataSplicer.frameHeaderLength else { return nil }
        let length = Int(buffer.getInteger(at: index, as: UInt32.self)! >> 8)
        guard buffer.getInteger(at: index + 3, as: UInt8.self)! == Self.goAway, length >= 8 else {
            self.skipping = length
            return InboundDataSplicer.frameHeaderLength
        }
        guard end - index >= Self.goAwayPrefix else { return nil }
        let code = buffer.getInteger(at: index + Self.goAwayPrefix - 4, as: UInt32.self)!
        if code != 0, self.errorCode == nil { self.errorCode = code }
        self.skipping = length - 8
        return Self.goAwayPrefix
    }

    /// nio-http2 wrote `count` bytes that are not in a buffer (a DATA payload as a file region).
    mutating func observe(count: Int) {
        // Only a payload can be a file region; a header cut there is not nio-http2's.
        self.skipping = max(0, self.skipping - count)
    }
}
