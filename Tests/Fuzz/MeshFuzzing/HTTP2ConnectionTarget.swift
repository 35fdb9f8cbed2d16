internal import HBONE
internal import NIOCore
internal import NIOEmbedded
internal import NIOHPACK
internal import NIOHTTP2

/// A whole HBONE connection above TLS, on an `EmbeddedChannel`: the pipeline
/// ``HBONEPipeline/configure(_:role:configuration:streamInitializer:)`` builds (splicer or
/// record coalescer, nio-http2 with our settings, window opener, keepalive). As a server,
/// its streams answer every request 200 and echo their DATA; as a client, it has opened a
/// CONNECT stream and sent DATA on it before the peer's bytes arrive.
///
/// Input: one control byte (role, splicing on or off, how the bytes are cut), then the
/// peer's bytes (after the client preface, for a server). Properties:
///
/// - what we write is the client preface for a client, then whole HTTP/2 frames (RFC 9113
///   §4.1), starting with SETTINGS (§3.4);
/// - once we have written a GOAWAY with an error code, the connection is closed
///   (§5.4.1: "After sending the GOAWAY frame for an error condition, the endpoint MUST
///   close the TCP connection"), and it writes no frame after that GOAWAY but the ones
///   already flushed with it.
enum HTTP2ConnectionTarget {
    static let pieceSizes = [1, 7, 9, 16, 100, 1000, 5000, Int.max]

    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let control = reader.byte()
        var configuration = HBONEConfiguration()
        configuration.splicesData = control & 1 == 0
        let pieceSize = Self.pieceSizes[Int(control >> 1 & 7)]
        let role: InboundDataSplicer.Role = control & 0x10 == 0 ? .server : .client
        let bytes = role == .server ? HTTP2InboundTarget.preface + reader.rest : reader.rest

        let channel = EmbeddedChannel()
        defer {
            // A channel our handler closed has queued the removal of its handlers on the
            // loop; run it, or the pipeline's cycles outlive the input.
            _ = try? channel.finish()
            channel.embeddedEventLoop.run()
        }
        do {
            let multiplexer = try HBONEPipeline.configure(channel.pipeline.syncOperations, role: role, configuration: configuration) { stream in
                guard role == .server else { return stream.close() }  // servers do not push
                return stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(AnswerStream()) }
            }
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
            if role == .client {
                multiplexer.createStreamChannel(promise: nil) { stream in
                    stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(ConnectStream()) }
                }
                channel.embeddedEventLoop.run()
            }
        } catch {
            throw FuzzFailure("the pipeline could not be set up: \(error)")
        }
        var wire: [UInt8] = []
        var start = 0
        while start < bytes.count, channel.isActive {
            let end = bytes.count - start > pieceSize ? start + pieceSize : bytes.count
            // nio-http2's errors reach the end of the pipeline, where EmbeddedChannel
            // rethrows them; what matters is what went out and whether the channel closed.
            _ = try? channel.writeInbound(ByteBuffer(bytes: bytes[start..<end]))
            try Self.drain(channel, into: &wire)
            start = end
        }
        try Self.drain(channel, into: &wire)

        if role == .client {
            try require(wire.starts(with: HTTP2InboundTarget.preface), "the client did not start with the preface")
            wire.removeFirst(HTTP2InboundTarget.preface.count)
        }
        let frames = try Self.frames(wire)
        try require(frames.first?.type == 0x4, "the first frame is not SETTINGS: \(frames.first.map { "\($0)" } ?? "none")")
        if let goAway = frames.firstIndex(where: { $0.type == 0x7 && $0.errorCode != 0 }) {
            try require(!channel.isActive, "GOAWAY with error \(frames[goAway].errorCode) sent, the connection is still open")
        }
        return channel.isActive
    }

    static func drain(_ channel: EmbeddedChannel, into wire: inout [UInt8]) throws(FuzzFailure) {
        do {
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let buffer) = data else { throw FuzzFailure("a file region on an HBONE connection") }
                wire += buffer.readableBytesView
            }
        } catch let failure as FuzzFailure {
            throw failure
        } catch {
            throw FuzzFailure("the output is not IOData: \(error)")
        }
    }

    struct Frame: CustomStringConvertible {
        var type: UInt8
        var length: Int
        var errorCode: UInt32
        var description: String { "type \(self.type), \(self.length) bytes" }
    }

    /// `wire` walked frame by frame; it must end on a frame boundary.
    static func frames(_ wire: [UInt8]) throws(FuzzFailure) -> [Frame] {
        var frames: [Frame] = []
        var index = 0
        while index < wire.count {
            try require(wire.count - index >= 9, "the output ends inside a frame header after \(frames.count) frames")
            let length = Int(wire[index]) << 16 | Int(wire[index + 1]) << 8 | Int(wire[index + 2])
            try require(wire.count - index - 9 >= length, "the output ends inside frame \(frames.count) (\(length) bytes)")
            let type = wire[index + 3]
            var code: UInt32 = 0
            if type == 0x7, length >= 8 {
                code = wire[(index + 13)..<(index + 17)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            }
            frames.append(Frame(type: type, length: length, errorCode: code))
            index += 9 + length
        }
        return frames
    }
}

/// A stream that accepts its request (200) and echoes its DATA, ending when the peer does.
private final class AnswerStream: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .headers(let headers):
            let status = HPACKHeaders([(":status", "200")])
            context.writeAndFlush(Self.wrapOutboundOut(.headers(.init(headers: status, endStream: headers.endStream))), promise: nil)
        case .data(let data):
            context.writeAndFlush(Self.wrapOutboundOut(.data(data)), promise: nil)
        default:
            break
        }
    }
}

/// The client's tunnel: CONNECT, then a little DATA, as `HBONEClient` opens one.
private final class ConnectStream: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    func channelActive(context: ChannelHandlerContext) {
        let headers = HPACKHeaders([(":method", "CONNECT"), (":authority", "10.0.0.2:8080")])
        context.write(Self.wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        let data = HTTP2Frame.FramePayload.Data(data: .byteBuffer(ByteBuffer(string: "hello")))
        context.writeAndFlush(Self.wrapOutboundOut(.data(data)), promise: nil)
        context.fireChannelActive()
    }
}
