/// An error from the netlink layer.
///
/// Kernel errors carry the positive `errno` the kernel put in its `NLMSG_ERROR`
/// acknowledgement (RFC 3549 §2.3.2.2), so callers can tell `EEXIST` (already
/// installed, fine for idempotent apply) from real failures.
public struct NetlinkError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Hashable, Sendable {
        /// `mnl_socket_open` or `mnl_socket_bind` failed.
        case socketSetup
        /// Sending the request failed.
        case send
        /// Receiving the reply failed.
        case receive
        /// The kernel answered the request with this error.
        case kernel
        /// The request does not fit into one netlink message buffer.
        case messageTooLarge
        /// A reply or an attribute stream was malformed.
        case malformed
    }

    /// What went wrong.
    public var kind: Kind
    /// The positive `errno` value, when there is one.
    public var errno: Int32
    /// Extra context for humans.
    public var detail: String

    /// Creates an error.
    public init(kind: Kind, errno: Int32 = 0, detail: String = "") {
        self.kind = kind
        self.errno = errno
        self.detail = detail
    }

    /// `true` when the kernel said the object already exists (`EEXIST`).
    public var isAlreadyExists: Bool { self.kind == .kernel && self.errno == 17 }
    /// `true` when the kernel said the object does not exist (`ENOENT`, `ESRCH`, `ENODEV`).
    public var isNotFound: Bool { self.kind == .kernel && [2, 3, 19].contains(self.errno) }

    public var description: String {
        var text = "netlink \(self.kind)"
        if self.errno != 0 { text += " errno \(self.errno) (\(NetlinkError.describe(errno: self.errno)))" }
        if !self.detail.isEmpty { text += ": \(self.detail)" }
        return text
    }

    static func describe(errno: Int32) -> String {
        guard let cString = strerrorShim(errno) else { return "unknown" }
        return cString
    }
}
