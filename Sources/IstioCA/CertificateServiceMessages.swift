internal import ProtobufWire

/// Istio's certificate service on the wire (istio `security/proto/providers`, ztunnel
/// `proto/citadel.proto`), encoded by hand with its field numbers:
///
/// ```proto
/// package istio.v1.auth;
/// message IstioCertificateRequest {
///   string csr = 1;                       // PEM
///   int64 validity_duration = 3;          // seconds
///   google.protobuf.Struct metadata = 4;  // "ImpersonatedIdentity": spiffe ID (node proxies)
/// }
/// message IstioCertificateResponse { repeated string cert_chain = 1; }  // leaf … root
/// service IstioCertificateService {
///   rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
/// }
/// ```
///
/// `google.protobuf.Struct` is `map<string, Value> fields = 1`, a map being repeated
/// entries `{string key = 1; Value value = 2}`; of `Value` only `string_value = 3` is used.
public enum IstioCertificateService {
    /// The gRPC method path.
    public static let createCertificatePath = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
    /// The metadata key a node proxy uses to ask for a pod's identity.
    public static let impersonatedIdentityKey = "ImpersonatedIdentity"

    /// `IstioCertificateRequest`.
    public struct Request: Sendable, Hashable {
        /// The PEM CSR.
        public var csr: String
        /// Requested validity in seconds (0: the CA's default).
        public var validityDuration: Int64
        /// `metadata.fields` with string values.
        public var metadata: [String: String]

        /// A request.
        public init(csr: String, validityDuration: Int64, metadata: [String: String] = [:]) {
            self.csr = csr
            self.validityDuration = validityDuration
            self.metadata = metadata
        }
    }

    /// `IstioCertificateResponse`: one PEM certificate per element, leaf first, root last.
    public struct Response: Sendable, Hashable {
        /// The chain.
        public var certificateChain: [String]

        /// A response.
        public init(certificateChain: [String]) { self.certificateChain = certificateChain }
    }

    /// A message that is not what its field numbers promise.
    public struct DecodingError: Error, Hashable, Sendable, CustomStringConvertible {
        /// What is wrong.
        public var detail: String
        /// An error.
        public init(_ detail: String) { self.detail = detail }
        public var description: String { "malformed certificate service message: \(self.detail)" }
    }

    /// Encodes a request.
    public static func encode(_ request: Request) -> [UInt8] {
        var writer = ProtobufWriter()
        writer.string(field: 1, request.csr)
        writer.varint(field: 3, UInt64(bitPattern: request.validityDuration))
        var fields = ProtobufWriter()
        for (key, value) in request.metadata.sorted(by: { $0.key < $1.key }) {
            var stringValue = ProtobufWriter()
            stringValue.bytes(field: 3, Array(value.utf8), always: true)
            var entry = ProtobufWriter()
            entry.string(field: 1, key)
            entry.bytes(field: 2, stringValue.bytes, always: true)
            fields.bytes(field: 1, entry.bytes, always: true)
        }
        writer.bytes(field: 4, fields.bytes)
        return writer.bytes
    }

    /// Decodes a request; metadata values of kinds other than string are ignored.
    public static func decodeRequest(_ bytes: [UInt8]) throws(DecodingError) -> Request {
        var request = Request(csr: "", validityDuration: 0)
        try ProtobufReader.each(bytes, malformed: DecodingError.init) { (field, value) throws(DecodingError) in
            switch (field, value) {
            case (1, .bytes(let raw)): request.csr = try ProtobufReader.string(raw, malformed: DecodingError.init)
            case (3, .varint(let seconds)): request.validityDuration = Int64(bitPattern: seconds)
            case (4, .bytes(let structure)):
                try ProtobufReader.each(structure, malformed: DecodingError.init) { (field, value) throws(DecodingError) in
                    guard field == 1, case .bytes(let entry) = value else { return }
                    var key = ""
                    var text: String?
                    try ProtobufReader.each(entry, malformed: DecodingError.init) { (field, value) throws(DecodingError) in
                        switch (field, value) {
                        case (1, .bytes(let raw)): key = try ProtobufReader.string(raw, malformed: DecodingError.init)
                        case (2, .bytes(let kind)):
                            try ProtobufReader.each(kind, malformed: DecodingError.init) { (field, value) throws(DecodingError) in
                                if field == 3, case .bytes(let raw) = value { text = try ProtobufReader.string(raw, malformed: DecodingError.init) }
                            }
                        default: break
                        }
                    }
                    if let text { request.metadata[key] = text }
                }
            case (1, _), (3, _), (4, _):
                throw DecodingError("field \(field) has the wrong wire type")
            default:
                break
            }
        }
        return request
    }

    /// Encodes a response.
    public static func encode(_ response: Response) -> [UInt8] {
        var writer = ProtobufWriter()
        for pem in response.certificateChain { writer.bytes(field: 1, Array(pem.utf8), always: true) }
        return writer.bytes
    }

    /// Decodes a response.
    public static func decodeResponse(_ bytes: [UInt8]) throws(DecodingError) -> Response {
        var chain: [String] = []
        try ProtobufReader.each(bytes, malformed: DecodingError.init) { (field, value) throws(DecodingError) in
            switch (field, value) {
            case (1, .bytes(let raw)): chain.append(try ProtobufReader.string(raw, malformed: DecodingError.init))
            case (1, _): throw DecodingError("cert_chain has the wrong wire type")
            default: break
            }
        }
        return Response(certificateChain: chain)
    }
}

/// gRPC's length-prefixed messages (gRPC over HTTP/2, "Length-Prefixed-Message"): a
/// compressed flag byte, a 4-byte big-endian length, the message.
public enum GRPCFraming {
    /// gRPC status codes used here.
    public enum Status: Int, Sendable {
        case ok = 0
        case invalidArgument = 3
        case deadlineExceeded = 4
        case permissionDenied = 7
        case resourceExhausted = 8
        case unimplemented = 12
        case `internal` = 13
        case unavailable = 14
        case unauthenticated = 16
    }

    /// Frames one uncompressed message.
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        let count = UInt32(message.count)
        return [0, UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + message
    }

    /// The single message of a unary call's body. Compressed messages, more than one message,
    /// a truncated frame and anything over `limit` bytes are refused.
    public static func unframe(_ body: [UInt8], limit: Int) throws(IstioCertificateService.DecodingError) -> [UInt8] {
        guard body.count >= 5 else { throw .init("gRPC message shorter than its 5-byte prefix") }
        guard body[0] == 0 else { throw .init("compressed gRPC messages are not accepted") }
        let length = Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4])
        guard length <= limit else { throw .init("gRPC message of \(length) bytes exceeds \(limit)") }
        guard body.count == 5 + length else {
            throw .init(body.count < 5 + length ? "gRPC message truncated: \(body.count - 5) of \(length) bytes" : "more than one gRPC message in a unary call")
        }
        return Array(body[5...])
    }
}
