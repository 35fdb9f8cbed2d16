import Foundation
public import NodeAgent
public import Redirect
public import Logging
public import ServiceLifecycle
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// The node agent's end of ZDS (istio-cni `ztunnelserver.go`, notes §3): listens on the
/// SEQPACKET socket, and for every proxy that connects reads `ZdsHello` (5 s), replays the
/// snapshot (an Add with the netns descriptor per enrolled pod whose netns is known, a
/// Keep otherwise, then `SnapshotSent`), each awaiting its ack; afterwards Adds go to the
/// newest connection and Dels to all. One request is outstanding per connection and gets
/// exactly one response (5 s each way). Connections are checked every 5 s with a 10 ms
/// read between exchanges (istio-cni checks after 5 s without updates): EOF closes, data
/// is a protocol error.
public final class ZDSServer: WorkloadProxyLink, Service {
    /// One enrolled workload for the snapshot.
    public struct SnapshotEntry: Sendable {
        public var uid: String
        public var workload: WorkloadIdentity
        /// `nil` when the agent does not know the netns (a Keep is sent).
        public var netnsPath: String?

        public init(uid: String, workload: WorkloadIdentity, netnsPath: String?) {
            self.uid = uid
            self.workload = workload
            self.netnsPath = netnsPath
        }
    }

    /// Timeouts; ZDS's values by default.
    public struct Timeouts: Sendable {
        /// Waiting for `ZdsHello` after accept. Default 5 s.
        public var hello: Int32 = 5000
        /// Waiting for the response to a request. Default 5 s.
        public var response: Int32 = 5000
        /// Idle time before a liveness check. Default 5 s.
        public var liveness: Duration = .seconds(5)
        public init() {}
    }

    /// The socket path (`/var/run/ztunnel/ztunnel.sock`).
    public let path: String
    let snapshot: @Sendable () async -> [SnapshotEntry]
    let timeouts: Timeouts
    let logger: Logger
    private let connections = Mutex<[Connection]>([])
    private let listening = Mutex<ZDSListener?>(nil)

    /// A server at `path`; `snapshot` lists the enrolled workloads at the time a proxy connects.
    public init(
        path: String, timeouts: Timeouts = .init(), logger: Logger = Logger(label: "swift-hbone.zds"),
        snapshot: @escaping @Sendable () async -> [SnapshotEntry]
    ) {
        self.path = path
        self.timeouts = timeouts
        self.logger = logger
        self.snapshot = snapshot
    }

    /// How many proxies have completed their snapshot and are connected.
    public var connectedProxies: Int { self.connections.withLock { $0.filter { $0.ready.load(ordering: .acquiring) }.count } }

    /// Starts listening (call before ``run()`` to know the socket exists).
    public func listen() throws {
        let listener = try ZDSListener(path: self.path)
        self.listening.withLock { $0 = listener }
    }

    public func run() async throws {
        if self.listening.withLock({ $0 }) == nil { try self.listen() }
        let listener = self.listening.withLock { $0! }
        defer { listener.close() }
        try await withThrowingDiscardingTaskGroup { group in
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let accepted: ZDSSocket
                do {
                    accepted = try await Blocking.run { try listener.accept(timeoutMilliseconds: 200) }
                } catch ZDSSocket.Failure.timeout {
                    continue
                }
                // A proxy that connected while the server was stopping is turned away, not served.
                if Task.isCancelled || Task.isShuttingDownGracefully {
                    accepted.close()
                    break
                }
                group.addTask { await self.serve(accepted) }
            }
            for connection in self.connections.withLock({ $0 }) { connection.socket.close() }
        }
    }

    // MARK: WorkloadProxyLink

    public func add(uid: String, workload: WorkloadIdentity, namespace: NetworkNamespace) async throws(AgentError) {
        guard let newest = self.connections.withLock({ $0.last { $0.ready.load(ordering: .acquiring) } }) else {
            throw AgentError(.noProxyConnection, "no ztunnel connection")
        }
        let request = ZDS.Request.add(uid: uid, workload: workload)
        try await self.exchange(request, descriptor: namespace.descriptorForTransfer, on: newest)
    }

    public func delete(uid: String) async throws(AgentError) {
        for connection in self.connections.withLock({ $0 }) {
            _ = try? await self.exchange(.delete(uid: uid), descriptor: nil, on: connection)
        }
    }

    // MARK: Connections

    final class Connection: Sendable {
        let socket: ZDSSocket
        let ready = Atomic<Bool>(false)
        /// Serialises request/response exchanges (taken on the blocking threads only).
        let lock = NSLock()
        init(socket: ZDSSocket) { self.socket = socket }
    }

    private func serve(_ socket: ZDSSocket) async {
        let connection = Connection(socket: socket)
        self.connections.withLock { $0.append(connection) }
        defer {
            socket.close()
            self.connections.withLock { $0.removeAll { $0 === connection } }
        }
        do {
            let timeout = self.timeouts.hello
            let hello = try await Blocking.run { try socket.receive(timeoutMilliseconds: timeout) }
            hello.descriptors.forEach { _ = closeDescriptor($0) }
            guard hello.descriptors.isEmpty else { throw ZDS.ProtocolError("descriptor on ZdsHello") }
            guard try ZDS.decodeHello(hello.bytes) == .v1 else { throw ZDS.ProtocolError("ZdsHello without version V1") }
            for entry in await self.snapshot() {
                let info = entry.workload
                if let path = entry.netnsPath, let namespace = try? NetworkNamespace(path: path) {
                    try await self.exchange(.add(uid: entry.uid, workload: info), descriptor: namespace.descriptorForTransfer, on: connection)
                } else {
                    try await self.exchange(.keep(uid: entry.uid), descriptor: nil, on: connection)
                }
            }
            try await self.exchange(.snapshotSent, descriptor: nil, on: connection)
            connection.ready.store(true, ordering: .releasing)
            self.logger.info("node proxy connected, snapshot sent")
            try await self.watchLiveness(connection)
        } catch {
            self.logger.info("node proxy connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Sends `request` and waits for its one response; a NACK is thrown as `proxyRejected`.
    @discardableResult
    func exchange(_ request: ZDS.Request, descriptor: Int32?, on connection: Connection) async throws(AgentError) -> ZDS.Ack {
        let bytes = ZDS.encode(request)
        let timeout = self.timeouts.response
        let ack: ZDS.Ack
        do {
            ack = try await Blocking.run {
                connection.lock.lock()
                defer { connection.lock.unlock() }
                try connection.socket.send(bytes, descriptor: descriptor)
                let response = try connection.socket.receive(timeoutMilliseconds: timeout)
                response.descriptors.forEach { _ = closeDescriptor($0) }
                guard response.descriptors.isEmpty else { throw ZDS.ProtocolError("descriptor on a WorkloadResponse") }
                return try ZDS.decodeResponse(response.bytes)
            }
        } catch {
            connection.socket.close()
            throw AgentError(.noProxyConnection, "ZDS exchange failed: \(error)")
        }
        guard ack.isAck else { throw AgentError(.proxyRejected, ack.error) }
        return ack
    }

    /// Every `liveness` interval: a 10 ms read under the exchange lock. Timeout = healthy.
    private func watchLiveness(_ connection: Connection) async throws {
        while !Task.isCancelled {
            try await NodeAgent.sleep(self.timeouts.liveness)
            try await Blocking.run {
                connection.lock.lock()
                defer { connection.lock.unlock() }
                do {
                    let unexpected = try connection.socket.receive(timeoutMilliseconds: 10)
                    unexpected.descriptors.forEach { _ = closeDescriptor($0) }
                    throw ZDS.ProtocolError("unsolicited message from the proxy")
                } catch ZDSSocket.Failure.timeout {
                    return
                }
            }
        }
    }
}
