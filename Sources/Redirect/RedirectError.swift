public import Netlink

/// Why a redirection operation failed. Every failure of this module is one of these;
/// none is a crash, and a failed ``InPodRedirection/apply(in:)`` has already rolled back.
public struct RedirectError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Hashable, Sendable {
        /// The network namespace path does not exist (pod gone, netns deleted).
        case namespaceNotFound
        /// The path exists but is not a network namespace (e.g. an unmounted bind-mount target).
        case notANetworkNamespace
        /// `setns(2)` into or out of the namespace failed.
        case namespaceSwitch
        /// No usable `iptables`/`ip6tables` binary was found.
        case iptablesMissing
        /// `iptables-restore`/`-save` ran and failed (the detail holds its stderr).
        case iptablesFailed
        /// IPv6 rules were required but IPv6 is disabled in the namespace.
        case ipv6Disabled
        /// A netlink request failed (routes, rules, ipsets, nf_tables).
        case netlink(NetlinkError)
        /// A socket operation failed (the detail names it).
        case socket
        /// Invalid input (an address, an interface name).
        case invalidArgument
    }

    /// What went wrong.
    public var kind: Kind
    /// The `errno`, where there is one.
    public var errno: Int32
    /// Context for humans: paths, commands, stderr.
    public var detail: String

    /// Creates an error.
    public init(_ kind: Kind, errno: Int32 = 0, _ detail: String = "") {
        self.kind = kind
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var text: String
        switch self.kind {
        case .netlink(let error): text = "\(error)"
        default: text = "\(self.kind)"
        }
        if self.errno != 0 { text += " (errno \(self.errno))" }
        if !self.detail.isEmpty { text += ": \(self.detail)" }
        return text
    }
}

extension RedirectError {
    init(_ error: NetlinkError, _ context: String) {
        self.init(.netlink(error), errno: error.errno, context)
    }
}
