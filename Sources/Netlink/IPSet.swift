public import InternetAddress
internal import CMNL

/// ipset over nfnetlink (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_IPSET`, protocol
/// version 6; `linux/netfilter/ipset/ip_set.h`): the commands istio-cni uses for its probe
/// sets, without the `ipset` tool.
///
/// Every message is `nlmsghdr` + `nfgenmsg` + `IPSET_ATTR_PROTOCOL` first. Nested containers
/// (`IPSET_ATTR_DATA`, `IPSET_ATTR_IP`, `IPSET_ATTR_ADT`) carry `NLA_F_NESTED` and
/// multi-byte integers and addresses carry `NLA_F_NET_BYTEORDER`, which the kernel
/// checks (`ip_set_attr_netorder`, `flag_nested`) and answers with `IPSET_ERR_PROTOCOL`
/// otherwise.
public enum IPSet {
    /// The protocol version sent in every message (what `vishvananda/netlink` and istio-cni use).
    public static let protocolVersion: UInt8 = 6

    /// One entry of a `hash:ip` set.
    public struct Entry: Hashable, Sendable {
        /// The address.
        public var address: IPAddress
        /// The entry's comment (`IPSET_ATTR_COMMENT`), e.g. the pod UID.
        public var comment: String?

        /// Creates an entry.
        public init(address: IPAddress, comment: String? = nil) {
            self.address = address
            self.comment = comment
        }
    }

    /// Creates a `hash:ip` set with comment support (revision 2, `IPSET_FLAG_WITH_COMMENT`)
    /// for `family` (`AF_INET` or `AF_INET6`). No `NLM_F_EXCL`: an existing set of the same
    /// name and type is fine.
    public static func createHashIP(named name: String, family: UInt8, on socket: NetlinkSocket) throws(NetlinkError) {
        var request = try Self.request(IPSET_CMD_CREATE, flags: [.create], name: name)
        try request.put(UInt16(IPSET_ATTR_TYPENAME), string: "hash:ip")
        try request.put(UInt16(IPSET_ATTR_REVISION), u8: 2)
        try request.put(UInt16(IPSET_ATTR_FAMILY), u8: family)
        let data = try request.beginNest(UInt16(IPSET_ATTR_DATA), markNested: true)
        try request.put(Self.netOrder(IPSET_ATTR_CADT_FLAGS), u32BigEndian: UInt32(IPSET_FLAG_WITH_COMMENT.rawValue))
        request.endNest(data)
        try socket.perform(request)
    }

    /// Destroys the set (it must not be referenced by an iptables rule: `EBUSY`/`IPSET_ERR_BUSY`).
    public static func destroy(named name: String, on socket: NetlinkSocket) throws(NetlinkError) {
        try socket.perform(Self.request(IPSET_CMD_DESTROY, flags: [], name: name))
    }

    /// Removes every entry from the set.
    public static func flush(named name: String, on socket: NetlinkSocket) throws(NetlinkError) {
        try socket.perform(Self.request(IPSET_CMD_FLUSH, flags: [], name: name))
    }

    /// Adds `entry`, replacing its comment when the address is already present
    /// (no `NLM_F_EXCL`: upsert, as istio-cni does).
    public static func add(_ entry: Entry, to name: String, on socket: NetlinkSocket) throws(NetlinkError) {
        var request = try Self.request(IPSET_CMD_ADD, flags: [], name: name)
        try Self.putData(entry, into: &request)
        try socket.perform(request)
    }

    /// Deletes the entry for `address`; the kernel answers `IPSET_ERR_EXIST` when it is absent.
    public static func delete(_ address: IPAddress, from name: String, on socket: NetlinkSocket) throws(NetlinkError) {
        var request = try Self.request(IPSET_CMD_DEL, flags: [], name: name)
        try Self.putData(Entry(address: address), into: &request)
        try socket.perform(request)
    }

    /// The entries of the set (`IPSET_CMD_LIST` dump), comments included; `ENOENT` when
    /// there is no such set.
    public static func entries(of name: String, on socket: NetlinkSocket) throws(NetlinkError) -> [Entry] {
        let request = try Self.request(IPSET_CMD_LIST, flags: [.dump], name: name)
        var entries: [Entry] = []
        for message in try socket.perform(request) {
            let attributes = try message.attributes(afterFamilyHeader: MemoryLayout<nfgenmsg>.size)
            guard let adt = try attributes.nested(UInt16(IPSET_ATTR_ADT)) else { continue }
            for container in adt.all where container.type == UInt16(IPSET_ATTR_DATA) {
                let data = try NetlinkAttributes(parsing: container.payload)
                guard let ip = try data.nested(UInt16(IPSET_ATTR_IP)),
                      let raw = ip[UInt16(IPSET_ATTR_IPADDR_IPV4)] ?? ip[UInt16(IPSET_ATTR_IPADDR_IPV6)],
                      let address = IPAddress(bytes: raw.payload)
                else {
                    throw NetlinkError(kind: .malformed, detail: "ipset list entry without an address")
                }
                entries.append(Entry(address: address, comment: data.string(UInt16(IPSET_ATTR_COMMENT))))
            }
        }
        return entries
    }

    /// The set names that exist in the socket's namespace (`IPSET_CMD_LIST` dump of all sets,
    /// headers only).
    public static func setNames(on socket: NetlinkSocket) throws(NetlinkError) -> Set<String> {
        var request = NetlinkRequest(
            type: Self.messageType(IPSET_CMD_LIST), flags: [.dump], familyHeader: Self.familyHeader,
            summary: "ipset list"
        )
        try request.put(UInt16(IPSET_ATTR_PROTOCOL), u8: Self.protocolVersion)
        try request.put(Self.netOrder(IPSET_ATTR_FLAGS), u32BigEndian: UInt32(IPSET_FLAG_LIST_HEADER.rawValue))
        var names = Set<String>()
        for message in try socket.perform(request) {
            let attributes = try message.attributes(afterFamilyHeader: MemoryLayout<nfgenmsg>.size)
            if let name = attributes.string(UInt16(IPSET_ATTR_SETNAME)) { names.insert(name) }
        }
        return names
    }

    // MARK: Encoding

    private static var familyHeader: [UInt8] {
        var header = nfgenmsg()
        header.nfgen_family = UInt8(AF_INET)
        header.version = UInt8(NFNETLINK_V0)
        header.res_id = 0
        return withUnsafeBytes(of: header) { Array($0) }
    }

    private static func messageType<Command: RawRepresentable>(_ command: Command) -> UInt16 where Command.RawValue == UInt32 {
        UInt16(NFNL_SUBSYS_IPSET << 8) | UInt16(command.rawValue)
    }

    private static func netOrder(_ attribute: Int) -> UInt16 {
        UInt16(attribute) | UInt16(NLA_F_NET_BYTEORDER)
    }

    private static func request<Command: RawRepresentable>(
        _ command: Command, flags: NetlinkFlags, name: String
    ) throws(NetlinkError) -> NetlinkRequest where Command.RawValue == UInt32 {
        guard !name.isEmpty, name.utf8.count < Int(IPSET_MAXNAMELEN) else {
            throw NetlinkError(kind: .malformed, detail: "ipset name \"\(name)\" must be 1...\(IPSET_MAXNAMELEN - 1) bytes")
        }
        var request = NetlinkRequest(
            type: Self.messageType(command), flags: flags, familyHeader: Self.familyHeader,
            summary: "ipset command \(command.rawValue) on \(name)"
        )
        try request.put(UInt16(IPSET_ATTR_PROTOCOL), u8: Self.protocolVersion)
        try request.put(UInt16(IPSET_ATTR_SETNAME), string: name)
        return request
    }

    private static func putData(_ entry: Entry, into request: inout NetlinkRequest) throws(NetlinkError) {
        let data = try request.beginNest(UInt16(IPSET_ATTR_DATA), markNested: true)
        let ip = try request.beginNest(UInt16(IPSET_ATTR_IP), markNested: true)
        let addressType = entry.address.isIPv6 ? IPSET_ATTR_IPADDR_IPV6 : IPSET_ATTR_IPADDR_IPV4
        try request.put(Self.netOrder(addressType), bytes: entry.address.bytes)
        request.endNest(ip)
        if let comment = entry.comment {
            try request.put(UInt16(IPSET_ATTR_COMMENT), string: comment)
        }
        try request.put(Self.netOrder(IPSET_ATTR_LINENO), u32BigEndian: 0)
        request.endNest(data)
    }
}
