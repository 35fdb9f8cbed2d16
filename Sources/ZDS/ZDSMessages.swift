public import NodeAgent
internal import ProtobufWire

/// The ZDS messages (`istio.workload.zds`, istio `pkg/zdsapi/zds.proto`, ztunnel
/// `proto/zds.proto`) with their exact field numbers, encoded and decoded by hand: proto3,
/// one message per SEQPACKET datagram, no length prefix.
///
/// ```proto
/// enum Version { NOT_USED = 0; V1 = 1; }
/// message ZdsHello { Version version = 1; }
/// message WorkloadInfo { string name = 1; string namespace = 2; string service_account = 3; reserved 4; }
/// message AddWorkload { string uid = 1; WorkloadInfo workload_info = 2; }
/// message KeepWorkload { string uid = 1; }
/// message DelWorkload { string uid = 2; }
/// message SnapshotSent {}
/// message WorkloadRequest { oneof payload { AddWorkload add = 1; DelWorkload del = 2;
///                                           SnapshotSent snapshot_sent = 3; KeepWorkload keep = 5; } }
/// message Ack { string error = 1; }
/// message WorkloadResponse { oneof payload { Ack ack = 1; } }
/// ```
public enum ZDS {
    /// The largest datagram either side reads: both sides read into 1024 bytes and reject
    /// `MSG_TRUNC`, so no encoded message may be longer.
    public static let maximumMessageSize = 1024

    /// `WorkloadInfo{name = 1, namespace = 2, service_account = 3}`: the node agent's
    /// ``WorkloadIdentity``, one type for both ends.
    public typealias WorkloadInfo = WorkloadIdentity

    /// `WorkloadRequest` (agent → proxy).
    public enum Request: Hashable, Sendable {
        /// `add = 1`: `AddWorkload{uid = 1, workload_info = 2}`; carries the netns fd.
        case add(uid: String, workload: WorkloadInfo)
        /// `del = 2`: `DelWorkload{uid = 2}`.
        case delete(uid: String)
        /// `snapshot_sent = 3`.
        case snapshotSent
        /// `keep = 5`: `KeepWorkload{uid = 1}`.
        case keep(uid: String)

        /// Whether this request must carry exactly one fd (only Add does).
        public var carriesNamespace: Bool {
            if case .add = self { return true }
            return false
        }
    }

    /// `WorkloadResponse{ack = 1}` (proxy → agent): an empty error is an ACK, anything else a NACK.
    public struct Ack: Hashable, Sendable {
        public var error: String
        public init(error: String = "") { self.error = error }
        public var isAck: Bool { self.error.isEmpty }
    }

    /// `ZdsHello.version`.
    public enum Version: UInt64, Sendable {
        case notUsed = 0
        case v1 = 1
    }

    /// A message that is not valid ZDS.
    public struct ProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
        public var detail: String
        public init(_ detail: String) { self.detail = detail }
        public var description: String { "ZDS protocol error: \(self.detail)" }
    }

    // MARK: Encoding

    public static func encode(hello version: Version) -> [UInt8] {
        var writer = ProtoWriter()
        if version != .notUsed { writer.varint(field: 1, version.rawValue) }
        return writer.bytes
    }

    public static func encode(_ request: Request) -> [UInt8] {
        var inner = ProtoWriter()
        var writer = ProtoWriter()
        switch request {
        case .add(let uid, let workload):
            var info = ProtoWriter()
            info.string(field: 1, workload.name)
            info.string(field: 2, workload.namespace)
            info.string(field: 3, workload.serviceAccount)
            inner.string(field: 1, uid)
            inner.bytes(field: 2, info.bytes, always: true)
            writer.bytes(field: 1, inner.bytes, always: true)
        case .delete(let uid):
            inner.string(field: 2, uid)
            writer.bytes(field: 2, inner.bytes, always: true)
        case .snapshotSent:
            writer.bytes(field: 3, [], always: true)
        case .keep(let uid):
            inner.string(field: 1, uid)
            writer.bytes(field: 5, inner.bytes, always: true)
        }
        return writer.bytes
    }

    public static func encode(_ ack: Ack) -> [UInt8] {
        var inner = ProtoWriter()
        inner.string(field: 1, ack.error)
        var writer = ProtoWriter()
        writer.bytes(field: 1, inner.bytes, always: true)
        return writer.bytes
    }

    // MARK: Decoding

    public static func decodeHello(_ bytes: [UInt8]) throws(ProtocolError) -> Version {
        var version: UInt64 = 0
        try ProtoReader.each(bytes) { (field, value) throws(ProtocolError) in
            if field == 1, case .varint(let raw) = value { version = raw }
        }
        guard let known = Version(rawValue: version) else { throw ProtocolError("unknown ZdsHello version \(version)") }
        return known
    }

    public static func decodeRequest(_ bytes: [UInt8]) throws(ProtocolError) -> Request {
        var request: Request?
        try ProtoReader.each(bytes) { (field, value) throws(ProtocolError) in
            guard case .bytes(let payload) = value else {
                if [1, 2, 3, 5].contains(field) { throw ProtocolError("WorkloadRequest field \(field) has the wrong wire type") }
                return
            }
            switch field {
            case 1:
                var uid = ""
                var info: WorkloadInfo?
                try ProtoReader.each(payload) { (field, value) throws(ProtocolError) in
                    switch (field, value) {
                    case (1, .bytes(let raw)): uid = try ProtoReader.string(raw)
                    case (2, .bytes(let raw)):
                        var workload = WorkloadInfo(name: "", namespace: "", serviceAccount: "")
                        try ProtoReader.each(raw) { (field, value) throws(ProtocolError) in
                            guard case .bytes(let text) = value else { return }
                            switch field {
                            case 1: workload.name = try ProtoReader.string(text)
                            case 2: workload.namespace = try ProtoReader.string(text)
                            case 3: workload.serviceAccount = try ProtoReader.string(text)
                            default: break
                            }
                        }
                        info = workload
                    default: break
                    }
                }
                guard let info else { throw ProtocolError("AddWorkload without workload_info") }
                guard !uid.isEmpty else { throw ProtocolError("AddWorkload without uid") }
                request = .add(uid: uid, workload: info)
            case 2:
                request = .delete(uid: try Self.uid(in: payload, field: 2, message: "DelWorkload"))
            case 3:
                request = .snapshotSent
            case 5:
                request = .keep(uid: try Self.uid(in: payload, field: 1, message: "KeepWorkload"))
            default:
                break
            }
        }
        guard let request else { throw ProtocolError("WorkloadRequest without a known payload") }
        return request
    }

    public static func decodeResponse(_ bytes: [UInt8]) throws(ProtocolError) -> Ack {
        var ack: Ack?
        try ProtoReader.each(bytes) { (field, value) throws(ProtocolError) in
            guard field == 1, case .bytes(let payload) = value else { return }
            var error = ""
            try ProtoReader.each(payload) { (field, value) throws(ProtocolError) in
                if field == 1, case .bytes(let raw) = value { error = try ProtoReader.string(raw) }
            }
            ack = Ack(error: error)
        }
        guard let ack else { throw ProtocolError("WorkloadResponse without ack") }
        return ack
    }

    private static func uid(in payload: [UInt8], field expected: Int, message: String) throws(ProtocolError) -> String {
        var uid = ""
        try ProtoReader.each(payload) { (field, value) throws(ProtocolError) in
            if field == expected, case .bytes(let raw) = value { uid = try ProtoReader.string(raw) }
        }
        guard !uid.isEmpty else { throw ProtocolError("\(message) without uid (field \(expected))") }
        return uid
    }
}

/// The shared proto wire codec, with malformed input reported as ``ZDS/ProtocolError``.
typealias ProtoWriter = ProtobufWriter

enum ProtoReader {
    static func each(_ bytes: [UInt8], _ body: (Int, ProtobufReader.Value) throws(ZDS.ProtocolError) -> Void) throws(ZDS.ProtocolError) {
        try ProtobufReader.each(bytes, malformed: ZDS.ProtocolError.init, body)
    }

    static func string(_ raw: [UInt8]) throws(ZDS.ProtocolError) -> String {
        try ProtobufReader.string(raw, malformed: ZDS.ProtocolError.init)
    }
}
