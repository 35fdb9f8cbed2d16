@testable import HBONE
import MeshTestSupport
import NIOCore
import Testing

/// ``OutboundDataSplicer`` under random sends and random peer input (WINDOW_UPDATE of any
/// increment on any stream, SETTINGS with values in and out of range), checked against a
/// model of the peer's windows kept here from what the peer granted and what went on the
/// wire (RFC 9113 §6.9): no DATA beyond either window, no frame above
/// SETTINGS_MAX_FRAME_SIZE (§4.2), every stream's bytes in order, overflow past 2^31−1
/// answered with the stream or connection error §6.9.1 and §6.9.2 name, and, once the peer
/// opens its windows, nothing left behind.
@Suite("Outbound DATA splicer fuzzing")
struct OutboundDataSplicerFuzzTests {
    typealias Machine = OutboundDataSplicerTests
    static let streams: [Int32] = [1, 3]
    static let maximum = OutboundDataSplicer.maximumWindow
    /// Bytes whose position shows in their value (mod 251), so a reordering shows.
    static let pattern = (0..<(251 + 20_000)).map { UInt8($0 % 251) }

    /// What the peer granted and what it was sent, per stream and for the connection.
    struct Peer {
        var initialWindow = OutboundDataSplicer.defaultInitialWindow
        var maximumFrameSize = OutboundDataSplicer.defaultMaximumFrameSize
        var granted: [Int32: Int] = [:]
        var sent: [Int32: Int] = [:]
        var connectionGranted = OutboundDataSplicer.defaultInitialWindow
        var connectionSent = 0
        /// Streams reset for a window overflow: nothing more may be sent on them.
        var reset: Set<Int32> = []
        func window(_ stream: Int32) -> Int { self.granted[stream, default: 0] - self.sent[stream, default: 0] }
    }

    @Test("random sends, WINDOW_UPDATEs and SETTINGS: within the peer's windows and frame size, in order, nothing lost",
          arguments: [UInt64(21), 22, 23, 24])
    func fuzz(seed: UInt64) async {
        var random = SeededGenerator(seed: seed)
        var (streamErrors, connectionErrors, framed) = (0, 0, 0)
        iterations: for iteration in 0..<150 {
            await Task.yield() // a CPU-bound test on the shared pool: let the others in
            let context = "seed \(seed) iteration \(iteration)"
            var machine = Machine.machine(streams: Self.streams)
            var peer = Peer()
            var submitted: [Int32: [UInt8]] = [:]
            var received: [Int32: [UInt8]] = [:]
            for stream in Self.streams {
                let registered = machine.register(stream)
                #expect(registered)
                peer.granted[stream] = peer.initialWindow
            }
            /// Checks one operation's output against the model, then records it as sent.
            func account(_ output: OutboundDataSplicer.Output, _ before: Peer) -> Bool {
                for (stream, payload) in Machine.dataFrames(output) {
                    guard payload.count <= peer.maximumFrameSize, payload.count > 0 else {
                        Issue.record("\(context): a \(payload.count)-byte frame, limit \(peer.maximumFrameSize)")
                        return false
                    }
                    peer.sent[stream, default: 0] += payload.count
                    peer.connectionSent += payload.count
                    received[stream, default: []] += payload
                    framed += payload.count
                }
                for stream in Self.streams {
                    let new = peer.sent[stream, default: 0] - before.sent[stream, default: 0]
                    let admitted = max(0, peer.granted[stream, default: 0] - before.sent[stream, default: 0])
                    guard new <= admitted, new == 0 || !peer.reset.contains(stream) else {
                        Issue.record("\(context): \(new) bytes on stream \(stream), \(admitted) admitted")
                        return false
                    }
                }
                guard peer.connectionSent <= peer.connectionGranted else {
                    Issue.record("\(context): connection window overrun, \(peer.connectionSent) of \(peer.connectionGranted)")
                    return false
                }
                return true
            }
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                let before = peer
                var output = OutboundDataSplicer.Output()
                switch Int.random(in: 0..<10, using: &random) {
                case 0...3:
                    let stream = Self.streams.randomElement(using: &random)!
                    let start = submitted[stream, default: []].count % 251
                    let bytes = Array(Self.pattern[start..<start + Int.random(in: 0...20_000, using: &random)])
                    machine.send(stream, ByteBuffer(bytes: bytes), into: &output)
                    if !peer.reset.contains(stream) { submitted[stream, default: []] += bytes }
                case 4...7:
                    let stream: Int32 = [0, 0, 1, 3, 5].randomElement(using: &random)!
                    let increment: UInt32 = [
                        0, 1, UInt32.random(in: 1...100_000, using: &random), UInt32(Self.maximum) - 10, UInt32(Self.maximum),
                    ].randomElement(using: &random)!
                    let verdict = machine.windowUpdate(streamID: stream, increment: increment, into: &output)
                    let inc = Int(increment)
                    if stream == 0 {
                        let overflows = peer.connectionGranted - peer.connectionSent + inc > Self.maximum
                        #expect((verdict == .connectionError(code: InboundDataSplicer.flowControlError)) == overflows, "\(context)")
                        if overflows { connectionErrors += 1; continue iterations }
                        peer.connectionGranted += inc
                    } else if Self.streams.contains(stream), !peer.reset.contains(stream), inc > 0 {
                        let overflows = peer.window(stream) + inc > Self.maximum
                        #expect((verdict == .streamError(code: InboundDataSplicer.flowControlError)) == overflows, "\(context)")
                        if overflows {
                            streamErrors += 1
                            peer.reset.insert(stream)
                        } else {
                            peer.granted[stream, default: 0] += inc
                        }
                    }
                default:
                    var entries: [InboundDataSplicer.Setting] = []
                    if Bool.random(using: &random) {
                        let values: [UInt32] = [0, 1000, 65_535, 1 << 20, UInt32(Self.maximum), 1 << 31]
                        entries.append(.init(identifier: 0x4, value: values.randomElement(using: &random)!))
                    }
                    if Bool.random(using: &random) {
                        let values: [UInt32] = [16_383, 16_384, 100_000, 1 << 24 - 1, 1 << 24]
                        entries.append(.init(identifier: 0x5, value: values.randomElement(using: &random)!))
                    }
                    let code = machine.settings(entries, into: &output)
                    var overflows = false
                    for entry in entries {
                        if entry.identifier == 0x4, Int(entry.value) <= Self.maximum {
                            let delta = Int(entry.value) - peer.initialWindow
                            peer.initialWindow = Int(entry.value)
                            for stream in Self.streams where !peer.reset.contains(stream) {
                                peer.granted[stream, default: 0] += delta
                                overflows = overflows || peer.window(stream) > Self.maximum
                            }
                        } else if entry.identifier == 0x5, (1 << 14)...(1 << 24 - 1) ~= Int(entry.value) {
                            peer.maximumFrameSize = Int(entry.value)
                        }
                    }
                    #expect((code == InboundDataSplicer.flowControlError) == overflows, "\(context): SETTINGS \(entries)")
                    if overflows { connectionErrors += 1; continue iterations }
                }
                guard account(output, before) else { return }
            }
            // The peer opens every window (within 2^31−1): whatever waited goes out.
            var output = OutboundDataSplicer.Output()
            let before = peer
            let connectionRoom = Self.maximum - (peer.connectionGranted - peer.connectionSent)
            if connectionRoom > 0, machine.windowUpdate(streamID: 0, increment: UInt32(connectionRoom), into: &output) != .connectionError(code: 3) {
                peer.connectionGranted += connectionRoom
            }
            for stream in Self.streams where !peer.reset.contains(stream) {
                let room = Self.maximum - max(0, peer.window(stream))
                if room > 0, machine.windowUpdate(streamID: stream, increment: UInt32(room), into: &output) == .drop {
                    peer.granted[stream, default: 0] += room
                }
            }
            guard account(output, before) else { return }
            for stream in Self.streams {
                let got = received[stream, default: []], sent = submitted[stream, default: []]
                #expect(sent.starts(with: got), "\(context): stream \(stream)'s bytes out of order")
                if !peer.reset.contains(stream), peer.window(stream) > 0, peer.connectionGranted > peer.connectionSent {
                    #expect(got.count == sent.count, "\(context): stream \(stream) delivered \(got.count) of \(sent.count)")
                    #expect(machine.queuedBytes(stream) == 0, "\(context)")
                }
            }
        }
        #expect(streamErrors > 5 && connectionErrors > 5 && framed > 2_000_000,
                "the inputs reach every outcome: \(streamErrors) stream errors, \(connectionErrors) connection errors, \(framed) bytes framed")
    }
}
