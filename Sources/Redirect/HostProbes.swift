public import Netlink
internal import InternetAddress

/// The host side of probe handling (istio-cni `AppendHostRules` and `cni/pkg/ipset`, notes
/// §2.6): the `istio-inpod-probes-v4`/`-v6` `hash:ip` sets of enrolled pod IPs, each entry
/// commented with its pod UID, and the `ISTIO_POSTRT` rule that SNATs TCP from local
/// sockets (kubelet) to those IPs to the probe address, so the pod's rules let probes
/// through to the app instead of into the proxy.
///
/// Sets are managed over `NETLINK_NETFILTER` (``IPSet``), never with the `ipset` tool.
/// Runs in the namespace given to each call (the host's in production).
public struct HostProbes: Sendable {
    /// The iptables implementation of the host.
    public var backend: IptablesBackend
    /// Whether to manage the IPv6 set and rule too. Default `true`; pass `false` on hosts
    /// without IPv6 (istio-cni's `AMBIENT_IPV6=false`).
    public var ipv6: Bool

    /// Creates the host side for `backend`.
    public init(backend: IptablesBackend, ipv6: Bool = true) {
        self.backend = backend
        self.ipv6 = ipv6
    }

    static let chain = "ISTIO_POSTRT"

    /// Creates the sets (keeping existing entries: the caller re-adds enrolled pods and prunes
    /// the rest, where istio-cni flushes at start) and (re)creates the SNAT rules. Host rules
    /// are never reconciled in place: old ones are deleted and the rules written again, as
    /// istio-cni does at every start.
    public func install(in namespace: NetworkNamespace) async throws {
        let backend = self.backend
        let families = self.families
        try await namespace.run {
            let socket = try Self.netfilterSocket()
            for family in families {
                do throws(NetlinkError) {
                    try IPSet.createHashIP(named: HostProbeRules.setName(family), family: family.addressFamily, on: socket)
                } catch {
                    throw RedirectError(error, "creating ipset \(HostProbeRules.setName(family))")
                }
                let snapshot = try backend.save(family: family, lockFile: nil)
                if let payload = snapshot.removalPayload(of: [Self.chain]) {
                    try backend.restore(payload, family: family, lockFile: nil)
                }
                try backend.restore(IptablesRenderer.restorePayload(HostProbeRules.ruleSet(family: family)), family: family, lockFile: nil)
            }
        }
    }

    /// Adds (or updates) the entry for an enrolled pod's IP with its UID as comment.
    public func add(podIP: String, uid: String, in namespace: NetworkNamespace) async throws {
        let address = try Self.parse(podIP)
        try await namespace.run {
            do {
                try IPSet.add(IPSet.Entry(address: address, comment: uid), to: Self.setName(address), on: Self.netfilterSocket())
            } catch let error as NetlinkError {
                throw RedirectError(error, "adding \(podIP) to \(Self.setName(address))")
            }
        }
    }

    /// Deletes the entry for `podIP`, but only if its comment is `uid` (an IP reused by a
    /// newer pod keeps its entry). Returns whether an entry was deleted.
    @discardableResult
    public func remove(podIP: String, uid: String, in namespace: NetworkNamespace) async throws -> Bool {
        let address = try Self.parse(podIP)
        return try await namespace.run {
            let socket = try Self.netfilterSocket()
            let set = Self.setName(address)
            do {
                guard try IPSet.entries(of: set, on: socket).contains(IPSet.Entry(address: address, comment: uid)) else { return false }
                try IPSet.delete(address, from: set, on: socket)
                return true
            } catch let error as NetlinkError {
                throw RedirectError(error, "deleting \(podIP) from \(set)")
            }
        }
    }

    /// The entries of both sets.
    public func entries(in namespace: NetworkNamespace) async throws -> [IPSet.Entry] {
        let families = self.families
        return try await namespace.run {
            let socket = try Self.netfilterSocket()
            return try families.flatMap { family -> [IPSet.Entry] in
                do throws(NetlinkError) {
                    return try IPSet.entries(of: HostProbeRules.setName(family), on: socket)
                } catch {
                    throw RedirectError(error, "listing \(HostProbeRules.setName(family))")
                }
            }
        }
    }

    /// Uninstall: deletes the rules, then flushes and destroys the sets.
    public func uninstall(in namespace: NetworkNamespace) async throws {
        let backend = self.backend
        let families = self.families
        try await namespace.run {
            for family in families {
                let snapshot = try backend.save(family: family, lockFile: nil)
                if let payload = snapshot.removalPayload(of: [Self.chain]) {
                    try backend.restore(payload, family: family, lockFile: nil)
                }
            }
            let socket = try Self.netfilterSocket()
            for family in families {
                let name = HostProbeRules.setName(family)
                do throws(NetlinkError) {
                    try IPSet.flush(named: name, on: socket)
                    try IPSet.destroy(named: name, on: socket)
                } catch where error.isNotFound {
                } catch {
                    throw RedirectError(error, "destroying \(name)")
                }
            }
        }
    }

    private var families: [InPodRules.Family] { self.ipv6 ? [.ipv4, .ipv6] : [.ipv4] }

    private static func setName(_ address: IPAddress) -> String {
        HostProbeRules.setName(address.isIPv6 ? .ipv6 : .ipv4)
    }

    private static func parse(_ text: String) throws(RedirectError) -> IPAddress {
        guard let address = IPAddress(text) else { throw RedirectError(.invalidArgument, "\"\(text)\" is not an IP address") }
        return address
    }

    private static func netfilterSocket() throws(RedirectError) -> NetlinkSocket {
        do { return try NetlinkSocket(bus: .netfilter) } catch { throw RedirectError(error, "opening NETLINK_NETFILTER") }
    }
}
