/// Protocol Buffers wire format (proto3), by hand: the few messages this package speaks
/// (ZDS, Istio's certificate service) do not justify a code generator and its runtime.
///
/// Encoding follows <https://protobuf.dev/programming-guides/encoding/>: a key varint
/// `field << 3 | wireType`, then a varint (type 0), 8 or 4 fixed bytes (types 1 and 5) or
/// a length-prefixed payload (type 2). Proto3 omits fields holding their default value.

/// Writes proto3 fields; default values (0, empty) are omitted unless asked for.
public struct ProtobufWriter: Sendable {
    /// The encoded message so far.
    public var bytes: [UInt8] = []

    /// An empty message.
    public init() {}

    /// A bare varint (no key), as used inside keys and length prefixes.
    public mutating func rawVarint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            self.bytes.append(UInt8(value & 0x7f) | 0x80)
            value >>= 7
        }
        self.bytes.append(UInt8(value))
    }

    /// A varint field (wire type 0); zero is omitted.
    public mutating func varint(field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        self.rawVarint(UInt64(field << 3))
        self.rawVarint(value)
    }

    /// A length-delimited field (wire type 2); empty is omitted unless `always`
    /// (an empty sub-message that must be present, such as a oneof member).
    public mutating func bytes(field: Int, _ payload: [UInt8], always: Bool = false) {
        guard always || !payload.isEmpty else { return }
        self.rawVarint(UInt64(field << 3 | 2))
        self.rawVarint(UInt64(payload.count))
        self.bytes += payload
    }

    /// A string field (UTF-8, wire type 2); empty is omitted.
    public mutating func string(field: Int, _ text: String) {
        self.bytes(field: field, Array(text.utf8))
    }
}

/// Reads proto wire data with bounds checks: truncation, an over-long varint, field number
/// 0 or an unknown wire type is an error; unknown fields of known wire types are skipped.
public enum ProtobufReader {
    /// One field's value.
    public enum Value: Sendable {
        /// Wire type 0.
        case varint(UInt64)
        /// Wire type 2: a string, bytes or a sub-message.
        case bytes([UInt8])
        /// Wire types 1 and 5 (skipped, none of our messages uses them).
        case fixed
    }

    /// Calls `body` for every field of `bytes` in order. Malformed input is reported by
    /// throwing `malformed(reason)`, so each protocol keeps its own error type.
    public static func each<Failure: Error>(
        _ bytes: [UInt8], malformed: (String) -> Failure, _ body: (Int, Value) throws(Failure) -> Void
    ) throws(Failure) {
        var index = 0
        func varint() throws(Failure) -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < bytes.count else { throw malformed("truncated varint") }
                guard shift < 64 else { throw malformed("varint longer than 10 bytes") }
                let byte = bytes[index]
                index += 1
                result |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return result }
                shift += 7
            }
        }
        while index < bytes.count {
            let key = try varint()
            let field = Int(truncatingIfNeeded: key >> 3)
            guard field > 0 else { throw malformed("field number 0") }
            switch key & 7 {
            case 0:
                try body(field, .varint(try varint()))
            case 1, 5:
                let size = key & 7 == 1 ? 8 : 4
                guard index + size <= bytes.count else { throw malformed("truncated fixed field \(field)") }
                index += size
                try body(field, .fixed)
            case 2:
                let length = try varint()
                guard length <= UInt64(bytes.count - index) else { throw malformed("field \(field) length \(length) past the end") }
                let payload = Array(bytes[index..<index + Int(length)])
                index += Int(length)
                try body(field, .bytes(payload))
            default:
                throw malformed("unsupported wire type \(key & 7) for field \(field)")
            }
        }
    }

    /// A string field's text; invalid UTF-8 is `malformed`.
    public static func string<Failure: Error>(_ raw: [UInt8], malformed: (String) -> Failure) throws(Failure) -> String {
        guard let text = String(validating: raw, as: UTF8.self) else { throw malformed("string field is not UTF-8") }
        return text
    }
}
