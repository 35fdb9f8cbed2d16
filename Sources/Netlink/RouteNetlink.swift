internal import CMNL

/// Message types and headers of rtnetlink (`linux/rtnetlink.h`) that this project uses.
public enum RouteNetlink {
    /// `RTM_NEWLINK`.
    public static let newLink = UInt16(RTM_NEWLINK)
    /// `RTM_GETLINK`.
    public static let getLink = UInt16(RTM_GETLINK)
    /// `IFLA_IFNAME`: the interface name attribute of a link message.
    public static let interfaceNameAttribute = UInt16(IFLA_IFNAME)

    /// `struct ifinfomsg`: the family header of link messages.
    public struct InterfaceInfo: Sendable, Hashable {
        /// `ifi_family` (`AF_UNSPEC` for links).
        public var family: UInt8
        /// `ifi_type` (ARPHRD_*).
        public var deviceType: UInt16
        /// `ifi_index`.
        public var index: Int32
        /// `ifi_flags` (IFF_*).
        public var flags: UInt32
        /// `ifi_change`.
        public var change: UInt32

        /// The size of `struct ifinfomsg`.
        public static let size = MemoryLayout<ifinfomsg>.size

        /// Creates a header.
        public init(family: UInt8 = 0, deviceType: UInt16 = 0, index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) {
            self.family = family
            self.deviceType = deviceType
            self.index = index
            self.flags = flags
            self.change = change
        }

        /// Decodes the header from a message's family-header bytes.
        public init(bytes: ArraySlice<UInt8>) throws(NetlinkError) {
            guard bytes.count >= Self.size else {
                throw NetlinkError(kind: .malformed, detail: "ifinfomsg needs \(Self.size) bytes")
            }
            let raw = Array(bytes.prefix(Self.size)).withUnsafeBytes { $0.loadUnaligned(as: ifinfomsg.self) }
            self.init(
                family: raw.ifi_family, deviceType: raw.ifi_type, index: raw.ifi_index,
                flags: raw.ifi_flags, change: raw.ifi_change
            )
        }

        /// The header's wire bytes.
        public var bytes: [UInt8] {
            var raw = ifinfomsg()
            raw.ifi_family = self.family
            raw.ifi_type = self.deviceType
            raw.ifi_index = self.index
            raw.ifi_flags = self.flags
            raw.ifi_change = self.change
            return withUnsafeBytes(of: raw) { Array($0) }
        }
    }

    /// A network interface as `RTM_GETLINK` reports it.
    public struct Link: Sendable, Hashable {
        /// The interface index.
        public var index: Int32
        /// The interface name (`IFLA_IFNAME`).
        public var name: String
        /// `IFF_*` flags.
        public var flags: UInt32
    }

    /// Lists the links of the socket's network namespace (`RTM_GETLINK` dump).
    public static func links(on socket: NetlinkSocket) throws(NetlinkError) -> [Link] {
        let request = NetlinkRequest(
            type: getLink, flags: [.dump], familyHeader: InterfaceInfo().bytes, summary: "RTM_GETLINK dump"
        )
        return try socket.perform(request).map { (message) throws(NetlinkError) -> Link in
            let info = try InterfaceInfo(bytes: message.familyHeader(size: InterfaceInfo.size))
            let attributes = try message.attributes(afterFamilyHeader: InterfaceInfo.size)
            return Link(index: info.index, name: attributes.string(interfaceNameAttribute) ?? "", flags: info.flags)
        }
    }

    /// Looks one link up by index (`RTM_GETLINK` for `ifi_index`); throws `ENODEV` when absent.
    public static func link(index: Int32, on socket: NetlinkSocket) throws(NetlinkError) -> Link {
        let request = NetlinkRequest(
            type: getLink, flags: [], familyHeader: InterfaceInfo(index: index).bytes,
            summary: "RTM_GETLINK index \(index)"
        )
        guard let message = try socket.perform(request).first else {
            throw NetlinkError(kind: .malformed, detail: "RTM_GETLINK returned no message")
        }
        let info = try InterfaceInfo(bytes: message.familyHeader(size: InterfaceInfo.size))
        let attributes = try message.attributes(afterFamilyHeader: InterfaceInfo.size)
        return Link(index: info.index, name: attributes.string(interfaceNameAttribute) ?? "", flags: info.flags)
    }
}
