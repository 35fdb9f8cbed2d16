internal import CMNL

/// The one nf_tables operation the redirection code needs over netlink
/// (`linux/netfilter/nf_tables.h`): deleting a table that `iptables-nft` left behind empty.
///
/// nf_tables only accepts changes inside a transaction: `NFNL_MSG_BATCH_BEGIN` (with
/// `res_id = NFNL_SUBSYS_NFTABLES`), the changes, `NFNL_MSG_BATCH_END`, in one datagram.
public enum NFTables {
    /// The family of a table: `ip` (`NFPROTO_IPV4`) or `ip6` (`NFPROTO_IPV6`).
    public enum Family: UInt8, Sendable {
        /// `NFPROTO_IPV4` (2): the tables `iptables-nft` writes.
        case ip = 2
        /// `NFPROTO_IPV6` (10): the tables `ip6tables-nft` writes.
        case ip6 = 10
    }

    /// Deletes table `name` of `family` with everything in it (`NFT_MSG_DELTABLE`).
    /// `ENOENT` when there is no such table.
    public static func deleteTable(named name: String, family: Family, on socket: NetlinkSocket) throws(NetlinkError) {
        var delete = NetlinkRequest(
            type: UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(NFT_MSG_DELTABLE.rawValue), flags: [],
            familyHeader: Self.header(family: family.rawValue, resourceID: 0),
            summary: "nft delete table \(family) \(name)"
        )
        try delete.put(UInt16(NFTA_TABLE_NAME.rawValue), string: name)
        try socket.perform(batch: [Self.marker(NFNL_MSG_BATCH_BEGIN), delete, Self.marker(NFNL_MSG_BATCH_END)])
    }

    private static func marker(_ type: Int32) -> NetlinkRequest {
        NetlinkRequest(
            type: UInt16(type), flags: [],
            familyHeader: Self.header(family: 0, resourceID: UInt16(NFNL_SUBSYS_NFTABLES)),
            summary: "nfnetlink batch marker", acknowledged: false
        )
    }

    private static func header(family: UInt8, resourceID: UInt16) -> [UInt8] {
        var header = nfgenmsg()
        header.nfgen_family = family
        header.version = UInt8(NFNETLINK_V0)
        header.res_id = resourceID.bigEndian
        return withUnsafeBytes(of: header) { Array($0) }
    }
}
