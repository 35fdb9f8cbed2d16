@testable import HBONE
import MeshTestSupport
import NIOCore
import Testing

/// ``InboundDataSplicer`` is the first parser an authenticated peer's HTTP/2 bytes meet
/// (before nio-http2's), so it gets hostile input here: mutated frame sequences and random
/// bytes after a valid opening, cut into pieces at random. Checked for every input, against
/// the input itself rather than a second implementation of the splicer:
///
/// - it returns and consumes its input (no trap, no loop), and the result does not depend
///   on how the input was cut (whole, random pieces, single bytes);
/// - walking the input frame by frame (RFC 9113 §4.1: a 9-octet header, then `length`
///   octets), every frame either reaches nio-http2 whole and in order, or is a DATA frame of
///   a registered, open stream within SETTINGS_MAX_FRAME_SIZE and without END_STREAM whose
///   payload, padding removed (§6.1), reaches that stream's TCP side in order;
/// - a connection error comes only where the frame justifies it, with the code §6.1 and
///   §4.2 name, and nothing is passed on after it.
@Suite("Inbound DATA splicer fuzzing")
struct InboundDataSplicerFuzzTests {
    typealias Frames = InboundDataSplicerTests
    static let iterations = 1500
    /// `InboundDataSplicerTests.machine()`'s SETTINGS_MAX_FRAME_SIZE.
    static let maximumFrameSize = 1 << 16
    /// The stream window granted (the connection's is four times that). Small, and never
    /// returned here, so flow-control errors (RFC 9113 §6.9.1) are among the outcomes.
    static let window = 4096

    /// Preface, SETTINGS and HEADERS opening streams 1, 3 and 5; 1 and 3 are then registered.
    static let opening = Frames.preface + Frames.settings + Frames.headers(1) + Frames.headers(3) + Frames.headers(5)
    static let registered: Set<Int32> = [1, 3]

    @Test("mutated frames and random bytes: whole frames to nio-http2 or payloads to a tunnel, errors only where due",
          arguments: [UInt64(11), 12, 13])
    func fuzz(seed: UInt64) async {
        var random = SeededGenerator(seed: seed)
        var errors = 0, delivered = 0
        for iteration in 0..<Self.iterations {
            await Task.yield() // a CPU-bound test on the shared pool: let the others in
            let tail = iteration % 4 == 3
                ? random.bytes(Int.random(in: 0...400, using: &random))
                : random.mutate(Self.validTail(&random))
            let whole = Self.run(tail, cuts: [tail.count])
            var cuts: [Int] = []
            var remaining = tail.count
            while remaining > 0 {
                let size = iteration % 5 == 0 ? 1 : min(remaining, Int.random(in: 1...48, using: &random))
                cuts.append(size)
                remaining -= size
            }
            let pieces = Self.run(tail, cuts: cuts)
            let context = "seed \(seed) iteration \(iteration)"
            #expect(pieces.forwarded == whole.forwarded, "\(context): forwarded bytes depend on the cuts")
            #expect(pieces.delivered == whole.delivered, "\(context): delivered bytes depend on the cuts")
            #expect(pieces.errors == whole.errors, "\(context): errors depend on the cuts")
            #expect(pieces.settings == whole.settings, "\(context)")
            #expect(pieces.windowUpdates.map { "\($0)" } == whole.windowUpdates.map { "\($0)" }, "\(context)")
            Self.check(whole, against: tail, context: context)
            errors += whole.errors.count
            delivered += whole.delivered.values.reduce(0) { $0 + $1.count }
        }
        // The inputs reach both outcomes, or the walk above proves little.
        #expect(errors > 200, "connection errors: \(errors)")
        #expect(delivered > 40_000, "bytes delivered to tunnels: \(delivered)")
    }

    /// The opening as its own piece, streams 1 and 3 registered, then `tail` cut as `cuts` says.
    static func run(_ tail: [UInt8], cuts: [Int]) -> Frames.Output {
        var machine = Frames.machine(window: Self.window)
        var output = Frames.Output()
        Frames.feed(&machine, [Self.opening], into: &output)
        for stream in Self.registered {
            let accepted = machine.register(stream)
            #expect(accepted)
        }
        var chunks: [[UInt8]] = []
        var start = 0
        for cut in cuts where cut > 0 {
            chunks.append(Array(tail[start..<start + cut]))
            start += cut
        }
        Frames.feed(&machine, chunks, into: &output)
        return output
    }

    /// Walks `tail` frame by frame and accounts for every frame in `output`.
    static func check(_ output: Frames.Output, against tail: [UInt8], context: String) {
        guard Array(output.forwarded.prefix(Self.opening.count)) == Self.opening else {
            Issue.record("\(context): the opening was not forwarded unchanged")
            return
        }
        var forwarded = Self.opening.count
        var delivered: [Int32: Int] = [:]
        var open = Self.registered
        var charged: [Int32: Int] = [:]
        /// Between a HEADERS/PUSH_PROMISE without END_HEADERS and its last CONTINUATION
        /// (RFC 9113 §4.3): everything goes to nio-http2, unparsed.
        var inFieldBlock = false
        var offset = 0
        /// Everything produced has been accounted for; `error` is the connection error due here.
        func finish(error: UInt32?) {
            #expect(forwarded == output.forwarded.count, "\(context): \(output.forwarded.count - forwarded) forwarded bytes not from whole frames")
            for (stream, bytes) in output.delivered {
                #expect(bytes.count == delivered[stream, default: 0], "\(context): stream \(stream) got bytes of no frame")
            }
            #expect(output.errors == (error.map { [$0] } ?? []), "\(context): errors \(output.errors), due \(String(describing: error))")
        }
        while offset < tail.count {
            guard tail.count - offset >= InboundDataSplicer.frameHeaderLength else {
                return finish(error: nil)  // a partial header is held until the rest comes
            }
            let length = Int(tail[offset]) << 16 | Int(tail[offset + 1]) << 8 | Int(tail[offset + 2])
            let (type, flags) = (tail[offset + 3], tail[offset + 4])
            let stream = Int32(bitPattern: UInt32(tail[offset + 5] & 0x7f) << 24 | UInt32(tail[offset + 6]) << 16
                | UInt32(tail[offset + 7]) << 8 | UInt32(tail[offset + 8]))
            let end = offset + InboundDataSplicer.frameHeaderLength + length
            let frame = tail[offset..<min(end, tail.count)]
            let complete = end <= tail.count
            let endsStream = (type == 0x0 || type == 0x1) && flags & 0x1 != 0 || type == 0x3
            defer { offset = end }
            let inBlock = inFieldBlock
            if inBlock {
                if type == 0x9, flags & 0x4 != 0 { inFieldBlock = false }
            } else if type == 0x1 || type == 0x5, flags & 0x4 == 0 {
                inFieldBlock = true
            }
            // A DATA frame of a registered, open stream within the frame size limit and
            // without END_STREAM, outside a field block, is taken; every other frame is
            // passed on whole (a partial last frame: what has come of it, or nothing yet).
            guard !inBlock, type == 0x0, open.contains(stream), flags & 0x1 == 0, length <= Self.maximumFrameSize else {
                let rest = output.forwarded[forwarded...]
                guard rest.starts(with: frame) || (!complete && frame.starts(with: rest)) else {
                    Issue.record("\(context): frame at \(offset) (type \(type), flags \(flags), stream \(stream), length \(length)) not passed on whole")
                    return
                }
                forwarded += min(rest.count, frame.count)
                if endsStream, !inBlock { open.remove(stream) }
                continue
            }
            charged[stream, default: 0] += length
            let chargedTotal = charged.values.reduce(0, +)
            if charged[stream]! > Self.window || chargedTotal > 4 * Self.window {
                return finish(error: InboundDataSplicer.flowControlError)
            }
            var payload = frame.dropFirst(InboundDataSplicer.frameHeaderLength)
            if flags & 0x8 != 0 {
                if length == 0 { return finish(error: InboundDataSplicer.frameSizeError) }
                guard let padding = payload.first.map(Int.init) else { return finish(error: nil) }
                if padding >= length { return finish(error: InboundDataSplicer.protocolError) }
                payload = payload.dropFirst().prefix(length - 1 - padding)
            }
            let got = output.delivered[stream, default: []].dropFirst(delivered[stream, default: 0])
            guard got.starts(with: payload) || (!complete && payload.starts(with: got)) else {
                Issue.record("\(context): stream \(stream)'s payload at \(offset) was not delivered in order")
                return
            }
            delivered[stream, default: 0] += min(got.count, payload.count)
        }
        finish(error: nil)
    }

    /// A well-formed sequence of the frames a peer sends on an HBONE connection, for mutation.
    static func validTail(_ random: inout SeededGenerator) -> [UInt8] {
        var tail: [UInt8] = []
        for _ in 0..<Int.random(in: 2...14, using: &random) {
            let payload = random.bytes(Int.random(in: 0...160, using: &random))
            switch Int.random(in: 0..<14, using: &random) {
            case 0...3:  // a tunnel's DATA
                tail += Frames.data(Bool.random(using: &random) ? 1 : 3, payload)
            case 4:
                tail += Frames.data(1, payload, padding: Int.random(in: 0...30, using: &random))
            case 5:  // DATA of a stream never registered, or ending one
                tail += Frames.data(5, payload, endStream: Bool.random(using: &random))
            case 6:
                tail += Frames.ping
            case 7:
                tail += Frames.frame(0x8, stream: Bool.random(using: &random) ? 0 : 1, [0, 1, 0, 0])
            case 8:
                tail += Bool.random(using: &random) ? Frames.settings : Frames.frame(0x4, flags: 0x1, stream: 0, [])
            case 9:
                tail += Frames.headers(7, endStream: Bool.random(using: &random))
            case 10:  // RST_STREAM (ends a tunnel stream) or GOAWAY
                tail += Bool.random(using: &random)
                    ? Frames.frame(0x3, stream: 3, [0, 0, 0, 8]) : Frames.frame(0x7, stream: 0, [0, 0, 0, 1, 0, 0, 0, 0])
            case 11:  // an extension frame type, which RFC 9113 §4.1 says to ignore
                tail += Frames.frame(0x20, stream: 1, Array(payload.prefix(20)))
            case 12:  // padding as long as the frame (§6.1: PROTOCOL_ERROR)
                tail += Frames.frame(0x0, flags: 0x8, stream: 3, [UInt8(min(255, payload.count + 1))] + payload)
            default:  // padded with no room for the pad length (§4.2: FRAME_SIZE_ERROR)
                tail += Frames.frame(0x0, flags: 0x8, stream: 1, [])
            }
        }
        return tail
    }
}

