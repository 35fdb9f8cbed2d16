internal import CLinuxNet
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// One end of a ZDS connection: an `AF_UNIX` `SOCK_SEQPACKET` socket carrying one message
/// per datagram (≤ ``ZDS/maximumMessageSize`` bytes) and, with Add, one netns descriptor in
/// `SCM_RIGHTS`. Calls block; run them on dedicated threads (see ``Blocking``).
public final class ZDSSocket: Sendable {
    /// What a receive produced.
    public struct Datagram: Sendable {
        /// The message bytes.
        public var bytes: [UInt8]
        /// Descriptors that came with it (owned by the receiver: close them).
        public var descriptors: [Int32]
    }

    /// Why a socket operation failed.
    public enum Failure: Error, Hashable, Sendable, CustomStringConvertible {
        /// The peer closed the connection.
        case closed
        /// Nothing arrived before the deadline.
        case timeout
        /// The datagram or its control data did not fit (`MSG_TRUNC`/`MSG_CTRUNC`).
        case truncated
        /// A message longer than ``ZDS/maximumMessageSize`` was to be sent.
        case oversize(Int)
        /// A system call failed.
        case system(String, Int32)

        public var description: String {
            switch self {
            case .closed: "connection closed by peer"
            case .timeout: "timed out"
            case .truncated: "datagram or its descriptors truncated (over \(ZDS.maximumMessageSize) bytes or more than one fd)"
            case .oversize(let size): "message of \(size) bytes exceeds \(ZDS.maximumMessageSize)"
            case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
            }
        }
    }

    private let fd: Int32
    private let closed = Atomic<Bool>(false)

    init(descriptor: Int32) {
        self.fd = descriptor
    }

    deinit {
        Glibc.close(self.fd)
    }

    /// Ends the connection (idempotent): a receive blocked on another thread returns. The
    /// descriptor itself is closed only when the socket is released, never while another
    /// thread may still be inside `poll`/`recvmsg` on it (a closed number can be reused by
    /// a new socket at once, and that thread would then wait on a stranger's socket).
    public func close() {
        guard !self.closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(self.fd, Int32(SHUT_RDWR))
    }

    private var descriptor: Int32 { self.closed.load(ordering: .acquiring) ? -1 : self.fd }

    /// Connects to a listening agent at `path`.
    public static func connect(to path: String) throws(Failure) -> ZDSSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        let socket = ZDSSocket(descriptor: fd)
        // Non-blocking: a Unix connect to a listener whose backlog is full would otherwise
        // block forever (and no cancellation reaches a thread blocked in connect); with
        // O_NONBLOCK it fails with EAGAIN and the caller retries after its backoff.
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let result = try Self.withAddress(path) { Glibc.connect(fd, $0, $1) }
        guard result == 0 else { throw .system("connect \(path)", errno) }
        _ = fcntl(fd, F_SETFL, flags)
        return socket
    }

    /// Sends one message, with `descriptor` in `SCM_RIGHTS` when given.
    public func send(_ bytes: [UInt8], descriptor: Int32? = nil) throws(Failure) {
        guard bytes.count <= ZDS.maximumMessageSize else { throw .oversize(bytes.count) }
        let fd = self.descriptor
        guard fd >= 0 else { throw .closed }
        let sent = bytes.withUnsafeBytes { clinuxnet_send_with_fd(fd, $0.baseAddress, UInt($0.count), descriptor ?? -1) }
        if sent < 0 {
            let code = errno
            throw code == EPIPE || code == ECONNRESET ? .closed : .system("sendmsg", code)
        }
    }

    /// Receives one message, waiting at most `timeoutMilliseconds` (-1: forever).
    public func receive(timeoutMilliseconds: Int32 = -1) throws(Failure) -> Datagram {
        let fd = self.descriptor
        guard fd >= 0 else { throw .closed }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var ready: Int32
        repeat { ready = poll(&entry, 1, timeoutMilliseconds) } while ready < 0 && errno == EINTR
        if ready == 0 { throw .timeout }
        if ready < 0 { throw .system("poll", errno) }
        var buffer = [UInt8](repeating: 0, count: ZDS.maximumMessageSize)
        var fds = [Int32](repeating: -1, count: 4)
        var count: Int32 = 0
        var truncated: Int32 = 0
        let received = buffer.withUnsafeMutableBytes { raw in
            clinuxnet_receive_with_fds(fd, raw.baseAddress, UInt(raw.count), &fds, 4, &count, &truncated)
        }
        let descriptors = Array(fds.prefix(Int(count)))
        if received < 0 {
            descriptors.forEach { _ = Glibc.close($0) }
            let code = errno
            throw code == ECONNRESET ? .closed : .system("recvmsg", code)
        }
        if truncated != 0 {
            descriptors.forEach { _ = Glibc.close($0) }
            throw .truncated
        }
        if received == 0 && descriptors.isEmpty { throw .closed }
        return Datagram(bytes: Array(buffer.prefix(received)), descriptors: descriptors)
    }

    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws(Failure) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw .system("socket path too long", ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}

/// The listening socket the node agent owns (stale socket file removed first).
public final class ZDSListener: Sendable {
    private let fd: Int32
    private let closed = Atomic<Bool>(false)
    /// The socket path.
    public let path: String

    /// Listens at `path`.
    public init(path: String) throws(ZDSSocket.Failure) {
        unlink(path)
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        self.fd = fd
        self.path = path
        guard try ZDSSocket.withAddress(path, { bind(fd, $0, $1) }) == 0 else { throw .system("bind \(path)", errno) }
        guard listen(fd, 16) == 0 else { throw .system("listen", errno) }
    }

    deinit {
        Glibc.close(self.fd)
    }

    /// Accepts one connection, waiting at most `timeoutMilliseconds`.
    public func accept(timeoutMilliseconds: Int32) throws(ZDSSocket.Failure) -> ZDSSocket {
        guard !self.closed.load(ordering: .acquiring) else { throw .closed }
        var entry = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&entry, 1, timeoutMilliseconds)
        if ready == 0 { throw .timeout }
        if ready < 0 { throw .system("poll", errno) }
        let accepted = Glibc.accept(self.fd, nil, nil)
        if accepted >= 0 { _ = fcntl(accepted, F_SETFD, FD_CLOEXEC) }
        guard accepted >= 0 else { throw .system("accept", errno) }
        return ZDSSocket(descriptor: accepted)
    }

    /// Stops listening and removes the socket file (the descriptor is closed on release, as
    /// for ``ZDSSocket/close()``).
    ///
    /// `shutdown` refuses new connections but leaves the accept queue alone: a proxy whose
    /// connect landed there just before (its `connect` succeeded) would wait forever for a
    /// snapshot from a server that is gone. Those connections are accepted and ended here,
    /// so the proxy sees the reset and reconnects to the next agent.
    public func close() {
        guard !self.closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(self.fd, Int32(SHUT_RDWR))
        unlink(self.path)
        _ = fcntl(self.fd, F_SETFL, fcntl(self.fd, F_GETFL) | O_NONBLOCK)
        while true {
            let queued = Glibc.accept(self.fd, nil, nil)
            guard queued >= 0 else { break }
            Glibc.close(queued)
        }
    }
}

/// Runs blocking socket work on a fresh detached thread and awaits it, so neither the
/// concurrency pool nor an event loop ever blocks on a ZDS socket.
enum Blocking {
    /// Holds the closure for the thread.
    ///
    /// `@unchecked Sendable` is safe: created before `pthread_create`, read once on the new thread.
    private final class Job: @unchecked Sendable {
        let work: () -> Void
        init(_ work: @escaping () -> Void) { self.work = work }
    }

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let job = Unmanaged.passRetained(Job { continuation.resume(with: Result { try body() }) }).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { argument in
                Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue().work()
                return nil
            }, job)
            if status == 0 {
                pthread_detach(thread)
            } else {
                Unmanaged<Job>.fromOpaque(job).release()
                continuation.resume(throwing: ZDSSocket.Failure.system("pthread_create", status))
            }
        }
    }
}
