import MeshTestSupport
import Testing
import ZDS
import NodeAgent

/// Wire bytes against the byte sequences in the notes (`istio-cni.md` §3.2), decoding of
/// every message, and bad input.
@Suite("ZDS messages: wire bytes, decoding, bad input")
struct ZDSMessageTests {

    @Test("hello V1, ACK and SnapshotSent are the notes' bytes")
    func fixedBytes() throws {
        #expect(ZDS.encode(hello: .v1) == [0x08, 0x01])
        #expect(ZDS.encode(ZDS.Ack()) == [0x0a, 0x00])
        #expect(ZDS.encode(.snapshotSent) == [0x1a, 0x00])
        #expect(try ZDS.decodeHello([0x08, 0x01]) == .v1)
        #expect(try ZDS.decodeResponse([0x0a, 0x00]).isAck)
        #expect(try ZDS.decodeRequest([0x1a, 0x00]) == .snapshotSent)
    }

    @Test("Add, Del (uid = field 2), Keep and NACK have the notes' layout")
    func layouts() throws {
        let add = ZDS.encode(.add(uid: "u1", workload: .init(name: "n", namespace: "ns", serviceAccount: "sa")))
        // 0a L1 [0a 02 "u1"] [12 L2 [0a 01 "n"][12 02 "ns"][1a 02 "sa"]]
        #expect(add == [0x0a, 0x11, 0x0a, 0x02, 0x75, 0x31, 0x12, 0x0b, 0x0a, 0x01, 0x6e, 0x12, 0x02, 0x6e, 0x73, 0x1a, 0x02, 0x73, 0x61])
        #expect(ZDS.encode(.delete(uid: "u1")) == [0x12, 0x04, 0x12, 0x02, 0x75, 0x31])
        #expect(ZDS.encode(.keep(uid: "u1")) == [0x2a, 0x04, 0x0a, 0x02, 0x75, 0x31])
        #expect(ZDS.encode(ZDS.Ack(error: "no")) == [0x0a, 0x04, 0x0a, 0x02, 0x6e, 0x6f])
        #expect(try ZDS.decodeRequest(add) == .add(uid: "u1", workload: .init(name: "n", namespace: "ns", serviceAccount: "sa")))
        #expect(try ZDS.decodeRequest([0x12, 0x04, 0x12, 0x02, 0x75, 0x31]) == .delete(uid: "u1"))
        #expect(try ZDS.decodeRequest([0x2a, 0x04, 0x0a, 0x02, 0x75, 0x31]) == .keep(uid: "u1"))
        #expect(try ZDS.decodeResponse([0x0a, 0x04, 0x0a, 0x02, 0x6e, 0x6f]) == ZDS.Ack(error: "no"))
        // A DelWorkload with the uid in field 1 (the mistake the field number guards against) has no uid.
        #expect(throws: ZDS.ProtocolError.self) { try ZDS.decodeRequest([0x12, 0x04, 0x0a, 0x02, 0x75, 0x31]) }
    }

    @Test("a real pod's Add fits in one 1024-byte datagram; unknown fields are skipped")
    func sizesAndUnknownFields() throws {
        let uid = "7f0c1a9e-1111-4a6b-9c0d-123456789abc"
        let add = ZDS.encode(.add(uid: uid, workload: .init(name: String(repeating: "p", count: 253), namespace: String(repeating: "n", count: 63), serviceAccount: String(repeating: "s", count: 253))))
        #expect(add.count < ZDS.maximumMessageSize)
        // Field 9 (varint), field 10 (fixed64) and field 11 (bytes) from a newer peer.
        let extended = [0x48, 0x07, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5a, 0x01, 0xff] + ZDS.encode(.keep(uid: uid))
        #expect(try ZDS.decodeRequest(extended) == .keep(uid: uid))
    }

    @Test("truncated and malformed frames are protocol errors, never crashes", arguments: [
        [0x0a], [0x0a, 0x05, 0x0a], [0x12, 0x80], [0x0f, 0x00], [0x00, 0x00], [0x0a, 0x02, 0x0a, 0x05],
        [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], [],
    ] as [[UInt8]])
    func malformed(bytes: [UInt8]) {
        #expect(throws: ZDS.ProtocolError.self) { try ZDS.decodeRequest(bytes) }
        #expect(throws: ZDS.ProtocolError.self) { try ZDS.decodeResponse(bytes + [0x0a]) }
    }

    @Test("an Add without workload_info or uid is refused; an unknown hello version too")
    func requiredFields() {
        #expect(throws: ZDS.ProtocolError.self) { try ZDS.decodeRequest([0x0a, 0x04, 0x0a, 0x02, 0x75, 0x31]) }
        #expect(throws: ZDS.ProtocolError.self) { try ZDS.decodeRequest([0x0a, 0x02, 0x12, 0x00]) }
        #expect(throws: ZDS.ProtocolError.self) { try ZDS.decodeHello([0x08, 0x02]) }
    }

    @Test("fuzz: mutated messages never crash the decoders", arguments: [UInt64(51), 52])
    func fuzz(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let seeds = [ZDS.encode(.add(uid: "uid", workload: .init(name: "a", namespace: "b", serviceAccount: "c"))),
                     ZDS.encode(.delete(uid: "uid")), ZDS.encode(ZDS.Ack(error: "x"))]
        var decoded = 0
        for iteration in 0..<6000 {
            let bytes = random.mutate(seeds[iteration % seeds.count])
            if (try? ZDS.decodeRequest(bytes)) != nil { decoded += 1 }
            _ = try? ZDS.decodeResponse(bytes)
            _ = try? ZDS.decodeHello(bytes)
        }
        #expect(decoded > 0)
    }
}

@Suite("ZDS proxy state machine")
struct ZDSProxyStateMachineTests {
    static let info = ZDS.WorkloadInfo(name: "n", namespace: "ns", serviceAccount: "sa")

    @Test("snapshot replay: Add/Keep mark present, SnapshotSent drains the rest; reconnect starts over")
    func snapshot() {
        var machine = ZDSProxyStateMachine()
        machine.connectionStarted()
        #expect(machine.received(.add(uid: "a", workload: Self.info), descriptorCount: 1) == .start(uid: "a", workload: Self.info))
        machine.started("a")
        #expect(machine.received(.add(uid: "b", workload: Self.info), descriptorCount: 1) == .start(uid: "b", workload: Self.info))
        machine.started("b")
        #expect(machine.received(.snapshotSent, descriptorCount: 0) == .snapshotComplete(drain: []))
        #expect(machine.isSnapshotComplete)
        // The agent restarts and only knows "b" (as a Keep): "a" is drained.
        machine.connectionStarted()
        #expect(machine.received(.keep(uid: "b"), descriptorCount: 0) == .keep(uid: "b"))
        #expect(machine.received(.snapshotSent, descriptorCount: 0) == .snapshotComplete(drain: ["a"]))
        machine.stopped("a")
        #expect(machine.running == ["b"])
        #expect(machine.received(.delete(uid: "b"), descriptorCount: 0) == .stop(uid: "b"))
    }

    @Test("protocol errors: fd-less Add, fd-carrying Del, Keep after SnapshotSent, a second SnapshotSent")
    func errors() {
        var machine = ZDSProxyStateMachine()
        machine.connectionStarted()
        #expect(machine.received(.add(uid: "a", workload: Self.info), descriptorCount: 0) == .protocolError("AddWorkload must carry exactly one netns descriptor, got 0"))
        #expect(machine.received(.add(uid: "a", workload: Self.info), descriptorCount: 2) == .protocolError("AddWorkload must carry exactly one netns descriptor, got 2"))
        #expect(machine.received(.delete(uid: "a"), descriptorCount: 1) == .protocolError("only AddWorkload may carry a descriptor"))
        #expect(machine.received(.snapshotSent, descriptorCount: 0) == .snapshotComplete(drain: []))
        #expect(machine.received(.keep(uid: "a"), descriptorCount: 0) == .protocolError("KeepWorkload after SnapshotSent"))
        #expect(machine.received(.snapshotSent, descriptorCount: 0) == .protocolError("a second SnapshotSent"))
    }
}
