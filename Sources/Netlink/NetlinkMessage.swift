internal import CMNL

/// One netlink message received from the kernel (or parsed from bytes).
public struct NetlinkMessage: Sendable, Hashable {
    /// The whole message, header included.
    public let bytes: [UInt8]

    init(copying raw: UnsafeRawBufferPointer) {
        self.bytes = Array(raw)
    }

    /// Parses a message from bytes, checking the header length against the buffer.
    public init(bytes: [UInt8]) throws(NetlinkError) {
        let headerSize = MemoryLayout<nlmsghdr>.size
        guard bytes.count >= headerSize else {
            throw NetlinkError(kind: .malformed, detail: "message shorter than nlmsghdr")
        }
        let declared = bytes.withUnsafeBytes { Int($0.loadUnaligned(as: UInt32.self)) }
        guard declared >= headerSize, declared <= bytes.count else {
            throw NetlinkError(kind: .malformed, detail: "nlmsg_len \(declared) outside 16...\(bytes.count)")
        }
        self.bytes = Array(bytes[0..<declared])
    }

    /// `nlmsg_type`.
    public var type: UInt16 { self.header.nlmsg_type }
    /// `nlmsg_flags`.
    public var flags: UInt16 { self.header.nlmsg_flags }
    /// `nlmsg_seq`.
    public var sequence: UInt32 { self.header.nlmsg_seq }

    private var header: nlmsghdr {
        self.bytes.withUnsafeBytes { $0.loadUnaligned(as: nlmsghdr.self) }
    }

    /// The payload after the netlink header: the family header followed by attributes.
    public var payload: ArraySlice<UInt8> {
        self.bytes[MemoryLayout<nlmsghdr>.size...]
    }

    /// The family header of `size` bytes at the start of the payload.
    public func familyHeader(size: Int) throws(NetlinkError) -> ArraySlice<UInt8> {
        let payload = self.payload
        guard payload.count >= size else {
            throw NetlinkError(kind: .malformed, detail: "payload shorter than its \(size)-byte family header")
        }
        return payload.prefix(size)
    }

    /// The attributes that follow a family header of `familyHeaderSize` bytes
    /// (aligned to 4 bytes, `NLMSG_ALIGN`).
    public func attributes(afterFamilyHeader familyHeaderSize: Int) throws(NetlinkError) -> NetlinkAttributes {
        let payload = self.payload
        let aligned = (familyHeaderSize + 3) & ~3
        guard payload.count >= aligned else {
            throw NetlinkError(kind: .malformed, detail: "payload shorter than its family header")
        }
        return try NetlinkAttributes(parsing: Array(payload.dropFirst(aligned)))
    }
}

/// A parsed attribute stream (`struct nlattr` TLVs), in order of appearance.
///
/// Parsing walks the stream with libmnl's own bounds checks (`mnl_attr_ok`,
/// `mnl_attr_next`); any byte that does not form a whole attribute is an error,
/// never an out-of-bounds read.
public struct NetlinkAttributes: Sendable, Hashable {
    /// One attribute.
    public struct Attribute: Sendable, Hashable {
        /// The type with the `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` bits removed.
        public var type: UInt16
        /// Whether the sender set `NLA_F_NESTED`.
        public var isNested: Bool
        /// The payload (padding excluded).
        public var payload: [UInt8]
    }

    /// The attributes in order.
    public private(set) var all: [Attribute]

    /// Parses `bytes` as a sequence of attributes.
    public init(parsing bytes: [UInt8]) throws(NetlinkError) {
        var result: [Attribute] = []
        let complete: Bool = bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return true }
            var attribute = base.assumingMemoryBound(to: nlattr.self)
            var remaining = raw.count
            while remaining > 0 {
                guard mnl_attr_ok(attribute, Int32(remaining)) else { return false }
                let rawType = mnl_attr_get_type(attribute)
                let length = Int(mnl_attr_get_payload_len(attribute))
                let payloadStart = mnl_attr_get_payload(attribute)!
                let payload = Array(UnsafeRawBufferPointer(start: payloadStart, count: length))
                let fullType = attribute.pointee.nla_type
                result.append(
                    Attribute(type: rawType, isNested: fullType & UInt16(NLA_F_NESTED) != 0, payload: payload)
                )
                let next = UnsafeRawPointer(mnl_attr_next(attribute)!)
                let consumed = next - UnsafeRawPointer(attribute)
                remaining -= consumed
                attribute = next.assumingMemoryBound(to: nlattr.self)
            }
            return true
        }
        guard complete else {
            throw NetlinkError(kind: .malformed, detail: "truncated or oversized attribute after \(result.count) attributes")
        }
        self.all = result
    }

    /// The first attribute of `type`.
    public subscript(type: UInt16) -> Attribute? {
        self.all.first { $0.type == type }
    }

    /// The payload of `type` as a NUL-terminated string.
    public func string(_ type: UInt16) -> String? {
        guard let payload = self[type]?.payload else { return nil }
        let trimmed = payload.prefix { $0 != 0 }
        return String(decoding: trimmed, as: UTF8.self)
    }

    /// The payload of `type` as a host-order `u32`.
    public func u32(_ type: UInt16) -> UInt32? {
        guard let payload = self[type]?.payload, payload.count == 4 else { return nil }
        return payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }

    /// The payload of `type` as a network-order `u32`.
    public func u32BigEndian(_ type: UInt16) -> UInt32? {
        self.u32(type).map { UInt32(bigEndian: $0) }
    }

    /// The attributes nested inside `type`.
    public func nested(_ type: UInt16) throws(NetlinkError) -> NetlinkAttributes? {
        guard let payload = self[type]?.payload else { return nil }
        return try NetlinkAttributes(parsing: payload)
    }
}
