public import Netlink

#if canImport(Glibc)
internal import Glibc
#endif

/// The policy routing istio-cni adds inside an enrolled pod (`cni/pkg/iptables/iptables_linux.go`,
/// notes §2.5), over rtnetlink:
///
///     ip rule add fwmark 0x111/0xfff pref 32764 lookup 100
///     ip route replace local 0.0.0.0/0 dev lo table 100
///
/// and the IPv6 twins (`local ::/0`). Replies of the app to connections the proxy opened
/// with a spoofed source carry connmark 0x111 (restored to the packet mark by the mangle
/// rules), so the rule sends them to table 100, whose only route delivers everything
/// locally: back to the proxy's transparent socket instead of out of the pod.
public enum InPodRouting {
    /// The fwmark rule for `family`.
    public static func rule(_ family: InPodRules.Family, constants: InPodRules.Constants = .init()) -> RoutingPolicy.MarkRule {
        RoutingPolicy.MarkRule(
            family: family.addressFamily, mark: constants.connectionMark.value, mask: constants.connectionMark.mask,
            table: constants.routingTable, priority: constants.rulePriority
        )
    }

    /// The local default route for `family` through the loopback interface `loopbackIndex`.
    public static func route(_ family: InPodRules.Family, loopbackIndex: Int32, constants: InPodRules.Constants = .init()) -> RoutingPolicy.DefaultRoute {
        RoutingPolicy.DefaultRoute(
            family: family.addressFamily, type: RoutingPolicy.DefaultRoute.localType,
            interfaceIndex: loopbackIndex, table: constants.routingTable
        )
    }

    /// What of the routing is installed for `family` (`RTM_GETRULE`/`RTM_GETROUTE` dumps).
    struct Installed: Equatable {
        var rules: Int
        var route: Bool
    }

    /// Installs rule and route for `family` in the socket's namespace. Idempotent: an
    /// existing rule (`EEXIST`) is fine and the route is replaced.
    static func install(_ family: InPodRules.Family, constants: InPodRules.Constants, on socket: NetlinkSocket) throws(RedirectError) {
        let loopback = try Self.loopbackIndex(on: socket)
        do {
            try RoutingPolicy.replace(Self.route(family, loopbackIndex: loopback, constants: constants), on: socket)
        } catch {
            throw RedirectError(error, "adding the local route of table \(constants.routingTable)")
        }
        do {
            try RoutingPolicy.add(Self.rule(family, constants: constants), on: socket)
        } catch where error.isAlreadyExists {
            // Installed by an earlier apply (or by hand): exactly what we want.
        } catch {
            throw RedirectError(error, "adding \(Self.rule(family, constants: constants))")
        }
    }

    /// Removes rule and route for `family`; what is already gone is fine.
    static func remove(_ family: InPodRules.Family, constants: InPodRules.Constants, on socket: NetlinkSocket) throws(RedirectError) {
        let rule = Self.rule(family, constants: constants)
        // Delete every copy (a rule added without NLM_F_EXCL by another tool can be doubled).
        while true {
            do {
                try RoutingPolicy.delete(rule, on: socket)
            } catch where error.isNotFound {
                break
            } catch {
                throw RedirectError(error, "deleting \(rule)")
            }
        }
        let loopback = try Self.loopbackIndex(on: socket)
        do {
            try RoutingPolicy.delete(Self.route(family, loopbackIndex: loopback, constants: constants), on: socket)
        } catch where error.isNotFound {
        } catch {
            throw RedirectError(error, "deleting the local route of table \(constants.routingTable)")
        }
    }

    static func installed(_ family: InPodRules.Family, constants: InPodRules.Constants, on socket: NetlinkSocket) throws(RedirectError) -> Installed {
        let loopback = try Self.loopbackIndex(on: socket)
        do {
            let rule = Self.rule(family, constants: constants)
            let rules = try RoutingPolicy.markRules(family: family.addressFamily, on: socket).filter { $0 == rule }.count
            let route = try RoutingPolicy.defaultRoutes(family: family.addressFamily, table: constants.routingTable, on: socket)
                .contains(Self.route(family, loopbackIndex: loopback, constants: constants))
            return Installed(rules: rules, route: route)
        } catch {
            throw RedirectError(error, "reading rules and routes")
        }
    }

    private static func loopbackIndex(on socket: NetlinkSocket) throws(RedirectError) -> Int32 {
        let links: [RouteNetlink.Link]
        do {
            links = try RouteNetlink.links(on: socket)
        } catch {
            throw RedirectError(error, "listing links")
        }
        guard let loopback = links.first(where: { $0.name == "lo" }) else {
            throw RedirectError(.invalidArgument, "the namespace has no lo interface")
        }
        return loopback.index
    }
}

extension InPodRules.Family {
    /// `AF_INET` or `AF_INET6`.
    var addressFamily: UInt8 { UInt8(self == .ipv4 ? AF_INET : AF_INET6) }

    /// Whether IPv6 is usable in the calling thread's namespace: the kernel has IPv6 and
    /// `net.ipv6.conf.lo.disable_ipv6` is not 1 (what istio-cni checks).
    static func ipv6EnabledHere() -> Bool {
        let descriptor = open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var byte: UInt8 = 0
        return read(descriptor, &byte, 1) == 1 && byte == UInt8(ascii: "0")
    }
}
