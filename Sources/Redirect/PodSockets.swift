internal import CLinuxNet
public import InternetAddress
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// An IP address and port.
public struct SocketEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The address.
    public var address: IPAddress
    /// The port.
    public var port: UInt16

    /// Creates an endpoint.
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `host` (no brackets) and takes `port`; `nil` when `host` is not an IP address.
    public init?(host: String, port: UInt16) {
        guard let address = IPAddress(host) else { return nil }
        self.init(address: address, port: port)
    }

    /// `1.2.3.4:80` or `[::1]:80`.
    public var description: String { self.address.isIPv6 ? "[\(self.address)]:\(self.port)" : "\(self.address):\(self.port)" }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var storage = sockaddr_storage()
        return withUnsafeMutableBytes(of: &storage) { raw in
            let bytes = self.address.bytes
            switch self.address {
            case .v4:
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = self.port.bigEndian
                withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: bytes) }
                raw.storeBytes(of: address, as: sockaddr_in.self)
                return body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size))
            case .v6:
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                address.sin6_port = self.port.bigEndian
                withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: bytes) }
                raw.storeBytes(of: address, as: sockaddr_in6.self)
                return body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
    }

    init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &storage) { $0.loadUnaligned(as: sockaddr_in.self) }
            self.init(address: IPAddress(bytes: withUnsafeBytes(of: address.sin_addr) { Array($0) })!, port: UInt16(bigEndian: address.sin_port))
        case AF_INET6:
            let address = withUnsafeBytes(of: &storage) { $0.loadUnaligned(as: sockaddr_in6.self) }
            let bytes = withUnsafeBytes(of: address.sin6_addr) { Array($0) }
            // An IPv4-mapped address (::ffff:a.b.c.d) on a dual-stack socket is reported as IPv4.
            self.init(address: IPAddress.v6(bytes).unmapped, port: UInt16(bigEndian: address.sin6_port))
        default:
            return nil
        }
    }
}

/// Socket options for sockets the proxy opens in a pod.
public struct PodSocketOptions: Hashable, Sendable {
    /// `SO_MARK`, so the pod's rules let the proxy's own traffic pass. Default 0x539
    /// (``InPodRules/Constants/proxyMark``); `nil` for none.
    public var mark: UInt32? = 0x539
    /// `SO_REUSEPORT`. Default `false`.
    public var reusePort = false
    /// `IP_TRANSPARENT`/`IPV6_TRANSPARENT`: bind to a non-local address (a spoofed source for
    /// connections into the pod, or any address for a listener). Default `false`.
    public var transparent = false
    /// `IP_FREEBIND`/`IPV6_FREEBIND`: bind before the address is configured. Default `false`.
    public var freebind = false

    /// The defaults above.
    public init() {}
}

/// A socket created inside a pod's network namespace. It closes its descriptor when
/// released unless ownership was taken with ``takeDescriptor()`` (to hand it to SwiftNIO's
/// `ServerBootstrap.withBoundSocket` or `ClientBootstrap.withConnectedSocket`).
public final class PodSocket: Sendable {
    private let state: Mutex<Int32?>

    init(descriptor: Int32) {
        self.state = Mutex(descriptor)
    }

    deinit {
        if let descriptor = self.state.withLock({ $0 }) { close(descriptor) }
    }

    /// Gives up ownership: the caller closes the descriptor from now on.
    /// - Precondition: called at most once.
    public func takeDescriptor() -> Int32 {
        self.state.withLock { state in
            guard let descriptor = state else { preconditionFailure("PodSocket descriptor already taken") }
            state = nil
            return descriptor
        }
    }

    /// Runs `body` with the descriptor, which stays owned by this socket (for `accept`,
    /// `getsockopt`, …). Throws when ownership was already taken.
    public func withDescriptor<Result>(_ body: (Int32) throws -> Result) throws -> Result {
        guard let descriptor = self.state.withLock({ $0 }) else {
            throw RedirectError(.socket, "the descriptor was handed over with takeDescriptor()")
        }
        return try body(descriptor)
    }

    /// The bound local address (`getsockname`).
    public var localEndpoint: SocketEndpoint? {
        self.state.withLock { state in state.flatMap(PodSockets.localEndpoint(of:)) }
    }
}

/// Creates listening and connecting sockets inside a pod's network namespace (what
/// ztunnel's in-pod mode does for every enrolled pod: listeners on 15001/15006/15008 and
/// outbound connections, all marked), and reads the pre-NAT destination of redirected
/// connections.
public enum PodSockets {
    /// A TCP listener on `endpoint` inside `namespace`.
    public static func listen(
        on endpoint: SocketEndpoint, in namespace: NetworkNamespace, options: PodSocketOptions = .init(), backlog: Int32 = 128
    ) async throws -> PodSocket {
        try await namespace.run {
            let socket = try Self.makeSocket(for: endpoint.address, options: options, reuseAddress: true)
            let descriptor = socket.takeDescriptor()
            let result = endpoint.withSockaddr { bind(descriptor, $0, $1) }
            guard result == 0 else {
                let code = errno
                close(descriptor)
                throw RedirectError(.socket, errno: code, "bind \(endpoint)")
            }
            guard Glibc.listen(descriptor, backlog) == 0 else {
                let code = errno
                close(descriptor)
                throw RedirectError(.socket, errno: code, "listen \(endpoint)")
            }
            return PodSocket(descriptor: descriptor)
        }
    }

    /// A TCP connection to `destination` made from inside `namespace`, optionally from
    /// `source` (with ``PodSocketOptions/transparent`` for a non-local source). Connects
    /// on the namespace thread and waits at most `timeoutMilliseconds`.
    ///
    /// For this package's tests and tools only (`package`): it blocks a thread per call.
    /// The data path creates its upstream sockets on the event loop through HBONE's
    /// `HBONESocketProvider` (decision D14).
    package static func connect(
        to destination: SocketEndpoint, from source: SocketEndpoint? = nil, in namespace: NetworkNamespace,
        options: PodSocketOptions = .init(), timeoutMilliseconds: Int32 = 5000
    ) async throws -> PodSocket {
        try await namespace.run {
            let socket = try Self.makeSocket(for: destination.address, options: options, reuseAddress: source != nil)
            let descriptor = socket.takeDescriptor()
            let owned = PodSocket(descriptor: descriptor)
            if let source {
                if source.port == 0 {
                    // The port is chosen at connect(), by the 4-tuple: a bind to (address, 0)
                    // would search the whole port range for one free for *any* destination,
                    // which took half the proxy's CPU at a few thousand connections per second
                    // with TIME_WAIT sockets around (and fails once the range is used up).
                    var one: Int32 = 1
                    _ = setsockopt(descriptor, Int32(IPPROTO_IP), clinuxnet_ip_bind_address_no_port(), &one, socklen_t(MemoryLayout<Int32>.size))
                }
                guard source.withSockaddr({ bind(descriptor, $0, $1) }) == 0 else {
                    throw RedirectError(.socket, errno: errno, "bind source \(source)")
                }
            }
            let flags = fcntl(descriptor, F_GETFL)
            _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
            let started = destination.withSockaddr { Glibc.connect(descriptor, $0, $1) }
            if started != 0 {
                guard errno == EINPROGRESS else { throw RedirectError(.socket, errno: errno, "connect \(destination)") }
                var entry = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                var ready: Int32
                repeat { ready = poll(&entry, 1, timeoutMilliseconds) } while ready < 0 && errno == EINTR
                guard ready == 1 else { throw RedirectError(.socket, errno: ETIMEDOUT, "connect \(destination) timed out") }
                var failure: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &failure, &length)
                guard failure == 0 else { throw RedirectError(.socket, errno: failure, "connect \(destination)") }
            }
            _ = fcntl(descriptor, F_SETFL, flags)
            return owned
        }
    }

    /// The destination a redirected connection had before NAT (`SO_ORIGINAL_DST`, or
    /// `IP6T_SO_ORIGINAL_DST` for IPv6 sockets): what the app connected to before the
    /// in-pod REDIRECT sent it to 15001/15006.
    public static func originalDestination(ofDescriptor descriptor: Int32) throws(RedirectError) -> SocketEndpoint {
        guard let local = Self.localEndpoint(of: descriptor) else {
            throw RedirectError(.socket, errno: errno, "getsockname")
        }
        var domain: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(descriptor, SOL_SOCKET, SO_DOMAIN, &domain, &length)
        var storage = sockaddr_storage()
        // A dual-stack IPv6 socket carrying an IPv4 connection keeps its conntrack entry in IPv4.
        let ipv6 = domain == AF_INET6 && local.address.isIPv6
        guard clinuxnet_original_destination(descriptor, ipv6 ? 1 : 0, &storage) == 0 else {
            throw RedirectError(.socket, errno: errno, "SO_ORIGINAL_DST: no conntrack entry for this connection")
        }
        guard let endpoint = SocketEndpoint(storage: storage) else {
            throw RedirectError(.socket, "SO_ORIGINAL_DST returned address family \(storage.ss_family)")
        }
        return endpoint
    }

    /// `getsockname` as an endpoint.
    public static func localEndpoint(of descriptor: Int32) -> SocketEndpoint? {
        Self.endpoint(of: descriptor, getsockname)
    }

    /// `getpeername` as an endpoint.
    public static func peerEndpoint(of descriptor: Int32) -> SocketEndpoint? {
        Self.endpoint(of: descriptor, getpeername)
    }

    private static func endpoint(
        of descriptor: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) -> SocketEndpoint? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(descriptor, $0, &length) }
        }
        return result == 0 ? SocketEndpoint(storage: storage) : nil
    }

    /// `SO_MARK` of a socket.
    public static func mark(ofDescriptor descriptor: Int32) -> UInt32? {
        var mark: UInt32 = 0
        var length = socklen_t(MemoryLayout<UInt32>.size)
        return getsockopt(descriptor, SOL_SOCKET, clinuxnet_so_mark(), &mark, &length) == 0 ? mark : nil
    }

    private static func makeSocket(for address: IPAddress, options: PodSocketOptions, reuseAddress: Bool) throws(RedirectError) -> PodSocket {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let descriptor = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw RedirectError(.socket, errno: errno, "socket") }
        let socket = PodSocket(descriptor: descriptor)
        func set(_ level: Int32, _ option: Int32, _ value: UInt32, _ name: String) throws(RedirectError) {
            var value = value
            guard setsockopt(descriptor, level, option, &value, socklen_t(MemoryLayout<UInt32>.size)) == 0 else {
                throw RedirectError(.socket, errno: errno, "setsockopt \(name)")
            }
        }
        if reuseAddress { try set(SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") }
        if let mark = options.mark { try set(SOL_SOCKET, clinuxnet_so_mark(), mark, "SO_MARK") }
        if options.reusePort { try set(SOL_SOCKET, clinuxnet_so_reuseport(), 1, "SO_REUSEPORT") }
        if options.transparent {
            if address.isIPv6 {
                try set(Int32(IPPROTO_IPV6), clinuxnet_ipv6_transparent(), 1, "IPV6_TRANSPARENT")
            } else {
                try set(Int32(IPPROTO_IP), clinuxnet_ip_transparent(), 1, "IP_TRANSPARENT")
            }
        }
        if options.freebind {
            if address.isIPv6 {
                try set(Int32(IPPROTO_IPV6), clinuxnet_ipv6_freebind(), 1, "IPV6_FREEBIND")
            } else {
                try set(Int32(IPPROTO_IP), clinuxnet_ip_freebind(), 1, "IP_FREEBIND")
            }
        }
        return socket
    }
}
