internal import CLinuxNet

#if canImport(Glibc)
internal import Glibc
#endif

/// An open handle on a network namespace, given by path (`/var/run/netns/<name>`, the CNI
/// runtime's `CNI_NETNS`, `/proc/<pid>/ns/net`).
///
/// Code runs "inside" the namespace in one of two ways:
///
/// - ``run(_:)`` starts a dedicated OS thread, `setns(fd, CLONE_NEWNET)` there, runs the
///   closure, switches back and lets the thread end. For anything that blocks or takes
///   long (iptables-restore, netlink dumps, listeners): a namespace switch is per thread in
///   Linux, and a throwaway thread cannot carry the pod's namespace into unrelated work.
/// - ``enterBriefly(_:)`` switches the *calling* thread in, runs a short synchronous closure
///   and switches straight back: for creating one socket on the data path, as ztunnel's
///   `InpodNetns::run` does on its runtime's worker thread. No other work can run on the
///   thread in between, because the closure cannot suspend.
///
/// Sockets and netlink sockets created inside keep belonging to the namespace after the
/// closure returns, and processes spawned inside inherit it.
///
/// The handle keeps the namespace alive while it is open (as istio-cni's pod cache does);
/// ``inode`` and ``device`` identify it.
public final class NetworkNamespace: Sendable {
    /// The path it was opened from.
    public let path: String
    /// The namespace's inode number (`stat` of the path; what `ip netns identify` compares).
    public let inode: UInt64
    /// The device of the namespace filesystem.
    public let device: UInt64
    let descriptor: Int32

    /// Opens the namespace at `path`.
    ///
    /// - Throws: ``RedirectError/Kind/namespaceNotFound`` when the path does not exist,
    ///   ``RedirectError/Kind/notANetworkNamespace`` when it is not a network namespace.
    public init(path: String) throws(RedirectError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            throw RedirectError(code == ENOENT ? .namespaceNotFound : .notANetworkNamespace, errno: code, path)
        }
        // NS_GET_NSTYPE (_IO(0xb7, 0x3)) answers CLONE_NEWNET only for a network namespace file.
        let type = ioctl(descriptor, 0xb703)
        guard type == clinuxnet_clone_newnet() else {
            close(descriptor)
            throw RedirectError(.notANetworkNamespace, path + " is not a network namespace file")
        }
        var status = stat()
        fstat(descriptor, &status)
        self.path = path
        self.descriptor = descriptor
        self.inode = UInt64(status.st_ino)
        self.device = UInt64(status.st_dev)
    }

    /// Takes ownership of an open descriptor received from elsewhere (a ZDS `SCM_RIGHTS`
    /// message), checking it is a network namespace. The descriptor is closed on failure.
    public init(adopting descriptor: Int32) throws(RedirectError) {
        guard ioctl(descriptor, 0xb703) == clinuxnet_clone_newnet() else {
            close(descriptor)
            throw RedirectError(.notANetworkNamespace, "descriptor \(descriptor) is not a network namespace")
        }
        var status = stat()
        fstat(descriptor, &status)
        self.path = "fd:\(descriptor)"
        self.descriptor = descriptor
        self.inode = UInt64(status.st_ino)
        self.device = UInt64(status.st_dev)
    }

    /// The open descriptor, for passing to another process (`SCM_RIGHTS`); it stays owned
    /// by this handle.
    public var descriptorForTransfer: Int32 { self.descriptor }

    /// The namespace this process was started in (its main thread's).
    public static func host() throws(RedirectError) -> NetworkNamespace {
        try NetworkNamespace(path: "/proc/\(getpid())/ns/net")
    }

    deinit {
        close(self.descriptor)
    }

    /// Whether two handles refer to the same namespace.
    public func isSame(as other: NetworkNamespace) -> Bool {
        self.inode == other.inode && self.device == other.device
    }

    /// Runs `body` inside the namespace on a dedicated thread and returns its result.
    /// The calling task suspends; no pool or event-loop thread ever changes namespace.
    public func run<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            do {
                let thread = try DedicatedThread.start {
                    continuation.resume(with: Swift.Result { try self.runHere(body) })
                }
                DedicatedThread.detach(thread)
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Runs `body` inside the namespace on a dedicated thread and waits for it, blocking the
    /// calling thread (for synchronous callers such as a CNI plugin's `main`; never call it
    /// from an event loop or from async code).
    public func runBlocking<Result>(_ body: () throws -> Result) throws -> Result {
        try withoutActuallyEscaping(body) { body in
            let box = ResultBox<Result>()
            let thread = try DedicatedThread.start { box.result = Swift.Result { try self.runHere(body) } }
            DedicatedThread.join(thread)
            return try box.result!.get()
        }
    }

    /// Runs `body` on the calling thread switched into this namespace, and switches the
    /// thread back before returning. Costs two `setns(2)` and an `open(2)`; a thread per call
    /// (``run(_:)``) costs a `clone(2)` and two wake-ups.
    ///
    /// `body` must be short and must not block: on an event loop it holds up every other
    /// channel of that loop. If the thread cannot be switched back the process stops —
    /// continuing would run unrelated connections inside a pod.
    public func enterBriefly<Result>(_ body: () throws -> Result) throws -> Result {
        try self.switched(body) {
            fatalError("cannot switch a thread back from network namespace \(self.path): errno \(errno)")
        }
    }

    /// Switches the current (dedicated) thread into the namespace, runs `body`, switches back.
    /// If switching back failed the thread would stay in the pod; it ends right after this
    /// call either way, so nothing else ever runs on it.
    private func runHere<Result>(_ body: () throws -> Result) throws -> Result {
        try self.switched(body) {}
    }

    /// `setns` into the namespace, `body`, `setns` back; `restoreFailed` runs if the switch
    /// back fails.
    private func switched<Result>(_ body: () throws -> Result, restoreFailed: () -> Void) throws -> Result {
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { throw RedirectError(.namespaceSwitch, errno: errno, "open /proc/thread-self/ns/net") }
        defer { close(home) }
        guard clinuxnet_setns_net(self.descriptor) == 0 else {
            throw RedirectError(.namespaceSwitch, errno: errno, "setns into \(self.path)")
        }
        defer { if clinuxnet_setns_net(home) != 0 { restoreFailed() } }
        return try body()
    }
}

/// Holds a result written by a dedicated thread and read after `pthread_join`.
///
/// `@unchecked Sendable` is safe: the single write happens-before the read through
/// `pthread_join`, and no other thread touches the box.
private final class ResultBox<Value>: @unchecked Sendable {
    var result: Swift.Result<Value, any Error>?
}

/// A raw pthread for one piece of blocking work.
enum DedicatedThread {
    /// The closure a new thread runs.
    ///
    /// `@unchecked Sendable` is safe: the box is created before `pthread_create`, handed to
    /// exactly one thread and only read there.
    private final class Job: @unchecked Sendable {
        let work: () -> Void
        init(_ work: @escaping () -> Void) { self.work = work }
    }

    /// Starts a thread running `work`.
    @discardableResult
    static func start(_ work: @escaping () -> Void) throws(RedirectError) -> pthread_t {
        let job = Unmanaged.passRetained(Job(work)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { argument in
            let job = Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue()
            job.work()
            return nil
        }, job)
        guard status == 0 else {
            Unmanaged<Job>.fromOpaque(job).release()
            throw RedirectError(.namespaceSwitch, errno: status, "pthread_create")
        }
        return thread
    }

    /// Lets a thread's resources go when it ends (nobody joins it).
    static func detach(_ thread: pthread_t) {
        pthread_detach(thread)
    }

    /// Waits for a thread started with ``start(_:)`` and not detached.
    static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }
}
