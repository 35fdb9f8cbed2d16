internal import CMNL

#if canImport(Glibc)
internal import Glibc
#endif

func strerrorShim(_ code: Int32) -> String? {
    guard let pointer = strerror(code) else { return nil }
    return String(cString: pointer)
}

/// A netlink bus (the `protocol` argument of `socket(AF_NETLINK, SOCK_RAW, protocol)`).
public struct NetlinkBus: Hashable, Sendable {
    /// The raw protocol number.
    public var rawValue: Int32

    /// Creates a bus from its protocol number.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// `NETLINK_ROUTE`: links, addresses, routes and policy rules (rtnetlink).
    public static let route = NetlinkBus(rawValue: NETLINK_ROUTE)
    /// `NETLINK_NETFILTER`: nfnetlink subsystems, among them ipset (protocol 6).
    public static let netfilter = NetlinkBus(rawValue: NETLINK_NETFILTER)
}

/// A bound netlink socket that sends one request at a time and collects the reply.
///
/// This is the only type in the project that owns a libmnl handle. It is a class
/// because the handle has identity and must be closed exactly once, and it is not
/// `Sendable`: use one socket per thread (netlink requests are synchronous system
/// calls and must never run on an event-loop thread).
///
/// A socket belongs to the network namespace of the thread that opened it, which is
/// how the redirection code talks to a pod's namespace: enter the namespace, open a
/// socket, and keep using it after returning to the host namespace.
public final class NetlinkSocket {
    private let handle: OpaquePointer
    private var sequence: UInt32
    /// The socket's port id (`nl_pid`) assigned by the kernel at bind time.
    public let portID: UInt32
    /// Which bus the socket is on.
    public let bus: NetlinkBus

    /// Opens and binds a socket on `bus`.
    public init(bus: NetlinkBus) throws(NetlinkError) {
        guard let handle = mnl_socket_open(bus.rawValue) else {
            throw NetlinkError(kind: .socketSetup, errno: errno, detail: "mnl_socket_open")
        }
        if mnl_socket_bind(handle, 0, pid_t(MNL_SOCKET_AUTOPID)) < 0 {
            let code = errno
            mnl_socket_close(handle)
            throw NetlinkError(kind: .socketSetup, errno: code, detail: "mnl_socket_bind")
        }
        // Ask the kernel for extended acks so errors come with a reason where it has one,
        // and for strict checking of dump requests. Both are best effort (older kernels).
        var one: Int32 = 1
        _ = mnl_socket_setsockopt(handle, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(handle, NETLINK_GET_STRICT_CHK, &one, socklen_t(MemoryLayout<Int32>.size))
        self.handle = handle
        self.portID = mnl_socket_get_portid(handle)
        self.bus = bus
        self.sequence = UInt32(truncatingIfNeeded: time(nil))
    }

    deinit {
        mnl_socket_close(self.handle)
    }

    /// Sends `request` and returns every message of the reply.
    ///
    /// For a dump (`NLM_F_DUMP`) that is every message up to `NLMSG_DONE`; for a
    /// request with `NLM_F_ACK` it is the empty array once the kernel acknowledged
    /// success. A kernel error in the acknowledgement is thrown as
    /// ``NetlinkError/Kind/kernel`` with its `errno`.
    @discardableResult
    public func perform(_ request: NetlinkRequest) throws(NetlinkError) -> [NetlinkMessage] {
        try self.perform(batch: [request])
    }

    /// Sends `batch` in one datagram (an nfnetlink transaction: `NFNL_MSG_BATCH_BEGIN`,
    /// the changes, `NFNL_MSG_BATCH_END`) and waits for the acknowledgement of each
    /// message that asked for one. The first kernel error is thrown.
    @discardableResult
    public func perform(batch: [NetlinkRequest]) throws(NetlinkError) -> [NetlinkMessage] {
        self.sequence &+= 1
        let sequence = self.sequence
        var datagram: [UInt8] = []
        var pendingAcks = 0
        var summary = ""
        for var request in batch {
            request.setSequence(sequence)
            request.withBytes { datagram.append(contentsOf: $0) }
            if request.expectsAcknowledgement { pendingAcks += 1 }
            if summary.isEmpty || request.expectsAcknowledgement { summary = request.summary }
        }
        let sent = datagram.withUnsafeBytes { bytes in
            mnl_socket_sendto(self.handle, bytes.baseAddress, bytes.count)
        }
        if sent < 0 {
            throw NetlinkError(kind: .send, errno: errno, detail: "mnl_socket_sendto")
        }
        let collector = ReplyCollector()
        let bufferSize = 32 * 1024
        var buffer = [UInt8](repeating: 0, count: bufferSize)
        while true {
            let received = buffer.withUnsafeMutableBytes { raw in
                mnl_socket_recvfrom(self.handle, raw.baseAddress, raw.count)
            }
            if received < 0 {
                throw NetlinkError(kind: .receive, errno: errno, detail: "mnl_socket_recvfrom")
            }
            let unmanaged = Unmanaged.passUnretained(collector)
            let status = buffer.withUnsafeBytes { raw in
                mnl_cb_run(raw.baseAddress, received, sequence, self.portID, collectMessage, unmanaged.toOpaque())
            }
            if status < 0 {
                let code = errno
                // mnl_cb_run reports a kernel NLMSG_ERROR by returning -1 with errno set to
                // the (positive) error; ESRCH/EPROTO here mean a reply for another request.
                throw NetlinkError(kind: .kernel, errno: code, detail: summary)
            }
            if status <= MNL_CB_STOP {
                // A dump ends at NLMSG_DONE; otherwise each stop is one acknowledgement.
                pendingAcks -= 1
                if pendingAcks <= 0 { break }
            }
        }
        return collector.messages
    }
}

/// Accumulates the messages `mnl_cb_run` hands to ``collectMessage``.
private final class ReplyCollector {
    var messages: [NetlinkMessage] = []
}

/// The libmnl data callback: copies each message out of the receive buffer.
private let collectMessage: mnl_cb_t = { header, context in
    guard let header, let context else { return MNL_CB_ERROR }
    let collector = Unmanaged<ReplyCollector>.fromOpaque(context).takeUnretainedValue()
    let length = Int(header.pointee.nlmsg_len)
    let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(header), count: length)
    collector.messages.append(NetlinkMessage(copying: bytes))
    return MNL_CB_OK
}
