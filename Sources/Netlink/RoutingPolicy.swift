internal import CMNL

/// Policy-routing rules and routes over rtnetlink (`linux/fib_rules.h`, `linux/rtnetlink.h`),
/// the subset `ip rule` / `ip route` would send for fwmark rules and whole-family routes.
public enum RoutingPolicy {
    /// A fwmark rule: `ip rule add fwmark <mark>/<mask> lookup <table> pref <priority>`.
    public struct MarkRule: Hashable, Sendable, CustomStringConvertible {
        /// `AF_INET` (2) or `AF_INET6` (10).
        public var family: UInt8
        /// `FRA_FWMARK`.
        public var mark: UInt32
        /// `FRA_FWMASK`.
        public var mask: UInt32
        /// The routing table looked up (`FRA_TABLE`).
        public var table: UInt32
        /// The rule's preference (`FRA_PRIORITY`).
        public var priority: UInt32

        /// Creates a rule description.
        public init(family: UInt8, mark: UInt32, mask: UInt32, table: UInt32, priority: UInt32) {
            self.family = family
            self.mark = mark
            self.mask = mask
            self.table = table
            self.priority = priority
        }

        public var description: String {
            "\(self.family == AF_INET6 ? "-6 " : "")rule fwmark 0x\(String(self.mark, radix: 16))/0x\(String(self.mask, radix: 16)) lookup \(self.table) pref \(self.priority)"
        }
    }

    /// A default route of one type through one interface in one table, e.g.
    /// `ip route add local 0.0.0.0/0 dev lo table 100`.
    public struct DefaultRoute: Hashable, Sendable, CustomStringConvertible {
        /// `AF_INET` (2) or `AF_INET6` (10).
        public var family: UInt8
        /// The route type (`RTN_LOCAL` is 2).
        public var type: UInt8
        /// The output interface index (`RTA_OIF`).
        public var interfaceIndex: Int32
        /// The table (`RTA_TABLE`).
        public var table: UInt32

        /// `RTN_LOCAL`: deliver locally, whatever the destination.
        public static let localType = UInt8(RTN_LOCAL)

        /// Creates a route description.
        public init(family: UInt8, type: UInt8, interfaceIndex: Int32, table: UInt32) {
            self.family = family
            self.type = type
            self.interfaceIndex = interfaceIndex
            self.table = table
        }

        public var description: String {
            "route type \(self.type) \(self.family == AF_INET6 ? "::/0" : "0.0.0.0/0") oif \(self.interfaceIndex) table \(self.table)"
        }
    }

    // MARK: Rules

    /// Adds `rule` (`RTM_NEWRULE` with `NLM_F_CREATE|NLM_F_EXCL`, as `ip rule add` sends it).
    /// Throws `EEXIST` (``NetlinkError/isAlreadyExists``) when the same rule is installed.
    public static func add(_ rule: MarkRule, on socket: NetlinkSocket) throws(NetlinkError) {
        try socket.perform(Self.ruleRequest(UInt16(RTM_NEWRULE), [.create, .exclusive], rule))
    }

    /// Deletes `rule` (`RTM_DELRULE`); `ENOENT` when it is not installed.
    public static func delete(_ rule: MarkRule, on socket: NetlinkSocket) throws(NetlinkError) {
        try socket.perform(Self.ruleRequest(UInt16(RTM_DELRULE), [], rule))
    }

    /// The fwmark rules of `family` installed in the socket's namespace (`RTM_GETRULE` dump);
    /// rules without a fwmark are left out.
    public static func markRules(family: UInt8, on socket: NetlinkSocket) throws(NetlinkError) -> [MarkRule] {
        var header = fib_rule_hdr()
        header.family = family
        let request = NetlinkRequest(
            type: UInt16(RTM_GETRULE), flags: [.dump], familyHeader: withUnsafeBytes(of: header) { Array($0) },
            summary: "RTM_GETRULE dump"
        )
        var rules: [MarkRule] = []
        for message in try socket.perform(request) {
            let size = MemoryLayout<fib_rule_hdr>.size
            let raw = Array(try message.familyHeader(size: size)).withUnsafeBytes { $0.loadUnaligned(as: fib_rule_hdr.self) }
            let attributes = try message.attributes(afterFamilyHeader: size)
            guard let mark = attributes.u32(UInt16(FRA_FWMARK)) else { continue }
            rules.append(MarkRule(
                family: raw.family, mark: mark, mask: attributes.u32(UInt16(FRA_FWMASK)) ?? 0xffff_ffff,
                table: attributes.u32(UInt16(FRA_TABLE)) ?? UInt32(raw.table),
                priority: attributes.u32(UInt16(FRA_PRIORITY)) ?? 0
            ))
        }
        return rules
    }

    private static func ruleRequest(_ type: UInt16, _ flags: NetlinkFlags, _ rule: MarkRule) throws(NetlinkError) -> NetlinkRequest {
        var header = fib_rule_hdr()
        header.family = rule.family
        header.action = UInt8(FR_ACT_TO_TBL)
        header.table = rule.table < 256 ? UInt8(rule.table) : UInt8(RT_TABLE_UNSPEC.rawValue)
        var request = NetlinkRequest(
            type: type, flags: flags, familyHeader: withUnsafeBytes(of: header) { Array($0) },
            summary: type == UInt16(RTM_NEWRULE) ? "add \(rule)" : "delete \(rule)"
        )
        try request.put(UInt16(FRA_PRIORITY), u32: rule.priority)
        try request.put(UInt16(FRA_FWMARK), u32: rule.mark)
        try request.put(UInt16(FRA_FWMASK), u32: rule.mask)
        try request.put(UInt16(FRA_TABLE), u32: rule.table)
        return request
    }

    // MARK: Routes

    /// Adds or replaces `route` (`RTM_NEWROUTE` with `NLM_F_CREATE|NLM_F_REPLACE`, like
    /// `ip route replace`): idempotent by construction.
    public static func replace(_ route: DefaultRoute, on socket: NetlinkSocket) throws(NetlinkError) {
        try socket.perform(Self.routeRequest(UInt16(RTM_NEWROUTE), [.create, .replace], route))
    }

    /// Deletes `route` (`RTM_DELROUTE`); `ESRCH` when it is not installed.
    public static func delete(_ route: DefaultRoute, on socket: NetlinkSocket) throws(NetlinkError) {
        try socket.perform(Self.routeRequest(UInt16(RTM_DELROUTE), [], route))
    }

    /// The default routes (prefix length 0) of `family` in `table` (`RTM_GETROUTE` dump).
    public static func defaultRoutes(family: UInt8, table: UInt32, on socket: NetlinkSocket) throws(NetlinkError) -> [DefaultRoute] {
        var header = rtmsg()
        header.rtm_family = family
        let request = NetlinkRequest(
            type: UInt16(RTM_GETROUTE), flags: [.dump], familyHeader: withUnsafeBytes(of: header) { Array($0) },
            summary: "RTM_GETROUTE dump"
        )
        var routes: [DefaultRoute] = []
        for message in try socket.perform(request) {
            let size = MemoryLayout<rtmsg>.size
            let raw = Array(try message.familyHeader(size: size)).withUnsafeBytes { $0.loadUnaligned(as: rtmsg.self) }
            let attributes = try message.attributes(afterFamilyHeader: size)
            let routeTable = attributes.u32(UInt16(RTA_TABLE.rawValue)) ?? UInt32(raw.rtm_table)
            guard raw.rtm_dst_len == 0, routeTable == table, raw.rtm_family == family else { continue }
            routes.append(DefaultRoute(
                family: raw.rtm_family, type: raw.rtm_type,
                interfaceIndex: Int32(bitPattern: attributes.u32(UInt16(RTA_OIF.rawValue)) ?? 0), table: routeTable
            ))
        }
        return routes
    }

    private static func routeRequest(_ type: UInt16, _ flags: NetlinkFlags, _ route: DefaultRoute) throws(NetlinkError) -> NetlinkRequest {
        var header = rtmsg()
        header.rtm_family = route.family
        header.rtm_dst_len = 0
        header.rtm_table = route.table < 256 ? UInt8(route.table) : UInt8(RT_TABLE_UNSPEC.rawValue)
        header.rtm_protocol = UInt8(RTPROT_BOOT)
        header.rtm_scope = route.type == UInt8(RTN_LOCAL) ? UInt8(RT_SCOPE_HOST.rawValue) : UInt8(RT_SCOPE_UNIVERSE.rawValue)
        header.rtm_type = route.type
        var request = NetlinkRequest(
            type: type, flags: flags, familyHeader: withUnsafeBytes(of: header) { Array($0) },
            summary: type == UInt16(RTM_NEWROUTE) ? "replace \(route)" : "delete \(route)"
        )
        try request.put(UInt16(RTA_TABLE.rawValue), u32: route.table)
        try request.put(UInt16(RTA_OIF.rawValue), u32: UInt32(bitPattern: route.interfaceIndex))
        return request
    }
}
