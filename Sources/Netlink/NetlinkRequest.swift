internal import CMNL

/// Flags of a netlink request header (`nlmsg_flags`, `linux/netlink.h`).
public struct NetlinkFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `NLM_F_REQUEST`: every message to the kernel carries it.
    public static let request = NetlinkFlags(rawValue: UInt16(NLM_F_REQUEST))
    /// `NLM_F_ACK`: ask for an acknowledgement (success or error).
    public static let ack = NetlinkFlags(rawValue: UInt16(NLM_F_ACK))
    /// `NLM_F_DUMP`: return every object of the kind.
    public static let dump = NetlinkFlags(rawValue: UInt16(NLM_F_DUMP))
    /// `NLM_F_CREATE`: create the object if it does not exist.
    public static let create = NetlinkFlags(rawValue: UInt16(NLM_F_CREATE))
    /// `NLM_F_EXCL`: fail with `EEXIST` if it does exist.
    public static let exclusive = NetlinkFlags(rawValue: UInt16(NLM_F_EXCL))
    /// `NLM_F_REPLACE`: replace an existing object.
    public static let replace = NetlinkFlags(rawValue: UInt16(NLM_F_REPLACE))
}

/// A netlink request under construction: header, family header, then attributes.
///
/// The bytes are laid out by libmnl (`mnl_nlmsg_put_header`,
/// `mnl_nlmsg_put_extra_header`, `mnl_attr_put_check`, `mnl_attr_nest_*`), so
/// alignment and lengths follow `linux/netlink.h` exactly. Every `put` is bounds
/// checked against the buffer and throws ``NetlinkError/Kind/messageTooLarge``
/// instead of writing past it.
public struct NetlinkRequest: Sendable {
    /// The largest request this type builds (one page is plenty for rtnetlink and ipset).
    public static let capacity = 8192

    private var buffer: [UInt8]
    /// A short description used in error messages.
    public var summary: String

    /// Starts a request of `type` (e.g. `RTM_NEWRULE`) with `flags` and the family-specific
    /// fixed header (e.g. a `struct fib_rule_hdr`).
    ///
    /// ``NetlinkFlags/request`` is always added, and ``NetlinkFlags/ack`` on every request
    /// that is not a dump: the kernel then ends each reply with an acknowledgement
    /// (`netlink_rcv_skb` acks when `NLM_F_ACK` is set), which is how the socket knows a
    /// reply is complete. A dump ends with `NLMSG_DONE` instead.
    ///
    /// Pass `acknowledged: false` only for the markers of an nfnetlink batch
    /// (`NFNL_MSG_BATCH_BEGIN`/`END`), which the kernel never acknowledges.
    public init(
        type: UInt16, flags: NetlinkFlags, familyHeader: [UInt8] = [], summary: String? = nil, acknowledged: Bool = true
    ) {
        self.buffer = [UInt8](repeating: 0, count: NetlinkRequest.capacity)
        self.summary = summary ?? "message type \(type)"
        self.buffer.withUnsafeMutableBytes { raw in
            let header = mnl_nlmsg_put_header(raw.baseAddress)!
            header.pointee.nlmsg_type = type
            header.pointee.nlmsg_flags = flags.union(flags.contains(.dump) || !acknowledged ? [.request] : [.request, .ack]).rawValue
            if !familyHeader.isEmpty {
                let extra = mnl_nlmsg_put_extra_header(header, familyHeader.count)!
                familyHeader.withUnsafeBytes { source in
                    extra.copyMemory(from: source.baseAddress!, byteCount: source.count)
                }
            }
        }
    }

    /// The number of bytes the message occupies (`nlmsg_len`).
    public var length: Int {
        self.buffer.withUnsafeBytes { raw in
            Int(raw.load(as: UInt32.self))
        }
    }

    mutating func setSequence(_ sequence: UInt32) {
        self.buffer.withUnsafeMutableBytes { raw in
            raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self).pointee.nlmsg_seq = sequence
        }
    }

    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let length = self.length
        return try self.buffer.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[0..<length]))
        }
    }

    /// Whether the kernel will answer this message with an acknowledgement.
    var expectsAcknowledgement: Bool {
        self.buffer.withUnsafeBytes { raw in
            raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self).pointee.nlmsg_flags & UInt16(NLM_F_ACK) != 0
        }
    }

    /// The finished message bytes (for tests and for other transports).
    public var bytes: [UInt8] { Array(self.buffer[0..<self.length]) }

    /// Appends an attribute with a raw payload.
    public mutating func put(_ type: UInt16, bytes payload: [UInt8]) throws(NetlinkError) {
        let fits = self.buffer.withUnsafeMutableBytes { raw in
            payload.withUnsafeBytes { source in
                mnl_attr_put_check(
                    raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self),
                    raw.count, type, source.count, source.baseAddress
                )
            }
        }
        if !fits {
            throw NetlinkError(kind: .messageTooLarge, detail: "attribute \(type) in \(self.summary)")
        }
    }

    /// Appends a `u8` attribute.
    public mutating func put(_ type: UInt16, u8 value: UInt8) throws(NetlinkError) {
        try self.put(type, bytes: [value])
    }

    /// Appends a `u16` attribute in host byte order.
    public mutating func put(_ type: UInt16, u16 value: UInt16) throws(NetlinkError) {
        try self.put(type, bytes: withUnsafeBytes(of: value) { Array($0) })
    }

    /// Appends a `u32` attribute in host byte order.
    public mutating func put(_ type: UInt16, u32 value: UInt32) throws(NetlinkError) {
        try self.put(type, bytes: withUnsafeBytes(of: value) { Array($0) })
    }

    /// Appends a `u32` attribute in network byte order (`NLA_F_NET_BYTEORDER` users such as ipset).
    public mutating func put(_ type: UInt16, u32BigEndian value: UInt32) throws(NetlinkError) {
        try self.put(type, bytes: withUnsafeBytes(of: value.bigEndian) { Array($0) })
    }

    /// Appends a NUL-terminated string attribute.
    public mutating func put(_ type: UInt16, string value: String) throws(NetlinkError) {
        try self.put(type, bytes: Array(value.utf8) + [0])
    }

    /// Appends a flag attribute (no payload).
    public mutating func putFlag(_ type: UInt16) throws(NetlinkError) {
        try self.put(type, bytes: [])
    }

    /// An open nested attribute, closed by ``endNest(_:)``.
    public struct Nest: Sendable {
        fileprivate let offset: Int
    }

    /// Opens a nested attribute: attributes put until ``endNest(_:)`` go inside it.
    ///
    /// `NLA_F_NESTED` is set on `type` when `markNested` is true, as nfnetlink requires.
    public mutating func beginNest(_ type: UInt16, markNested: Bool = false) throws(NetlinkError) -> Nest {
        let attributeType = markNested ? type | UInt16(NLA_F_NESTED) : type
        let offset: Int? = self.buffer.withUnsafeMutableBytes { raw in
            let header = raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            guard let start = mnl_attr_nest_start_check(header, raw.count, attributeType) else { return nil }
            return UnsafeMutableRawPointer(start) - raw.baseAddress!
        }
        guard let offset else {
            throw NetlinkError(kind: .messageTooLarge, detail: "nest \(type) in \(self.summary)")
        }
        return Nest(offset: offset)
    }

    /// Closes `nest`, fixing up its length (`mnl_attr_nest_end`).
    public mutating func endNest(_ nest: Nest) {
        self.buffer.withUnsafeMutableBytes { raw in
            let header = raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            let start = (raw.baseAddress! + nest.offset).assumingMemoryBound(to: nlattr.self)
            mnl_attr_nest_end(header, start)
        }
    }
}
