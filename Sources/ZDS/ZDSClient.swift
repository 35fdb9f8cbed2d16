public import NodeAgent
public import Redirect
public import Logging
public import ServiceLifecycle

/// What the node proxy does with the workloads ZDS hands it.
public protocol ZDSWorkloadHandler: Sendable {
    /// Start serving `uid` inside `namespace` (listeners on 15001/15006/15008). Throwing
    /// answers with a NACK carrying the error text; the agent retries.
    func start(uid: String, workload: ZDS.WorkloadInfo, namespace: NetworkNamespace) async throws
    /// Stop serving `uid`.
    func stop(uid: String) async
    /// The agent's snapshot has been received in full (the proxy is ready).
    func snapshotComplete() async
    /// The connection to the agent ended; a new one will replay the snapshot (the proxy
    /// is not ready until then). Default: nothing.
    func connectionLost() async
}

extension ZDSWorkloadHandler {
    public func connectionLost() async {}
}

/// The node proxy's end of ZDS (ztunnel `src/inpod/workloadmanager.rs`): connects to the
/// agent's socket, says `ZdsHello{V1}`, then answers every request with exactly one
/// `WorkloadResponse` (ACK, or NACK with the error text); reconnects with a backoff from
/// 10 ms doubling to 15 s and receives a fresh snapshot on every connection.
public struct ZDSClient: Service {
    /// The agent's socket path (`/var/run/ztunnel/ztunnel.sock`).
    public var path: String
    let handler: any ZDSWorkloadHandler
    let logger: Logger

    public init(path: String, handler: any ZDSWorkloadHandler, logger: Logger = Logger(label: "swift-hbone.zds")) {
        self.path = path
        self.handler = handler
        self.logger = logger
    }

    public func run() async throws {
        var machine = ZDSProxyStateMachine()
        var backoff = Duration.milliseconds(10)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let path = self.path
                let socket = try await Blocking.run { try ZDSSocket.connect(to: path) }
                backoff = .milliseconds(10)
                machine.connectionStarted()
                do {
                    try await cancelWhenShuttingDown(socket) {
                        try await self.serve(socket, &machine)
                    }
                } catch {
                    await self.handler.connectionLost()
                    throw error
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                self.logger.debug("ZDS connection ended", metadata: ["error": "\(error)"])
            }
            try? await Self.pause(backoff)
            backoff = min(backoff * 2, .seconds(15))
        }
    }

    private func serve(_ socket: ZDSSocket, _ machine: inout ZDSProxyStateMachine) async throws {
        let hello = ZDS.encode(hello: .v1)
        try await Blocking.run { try socket.send(hello) }
        while true {
            let datagram = try await Blocking.run { try socket.receive() }
            let request: ZDS.Request
            do {
                request = try ZDS.decodeRequest(datagram.bytes)
            } catch {
                datagram.descriptors.forEach { _ = closeDescriptor($0) }
                try await self.reply(socket, error: error.description)
                throw error
            }
            switch machine.received(request, descriptorCount: datagram.descriptors.count) {
            case .protocolError(let reason):
                datagram.descriptors.forEach { _ = closeDescriptor($0) }
                try await self.reply(socket, error: reason)
                throw ZDS.ProtocolError(reason)
            case .start(let uid, let workload):
                do {
                    let namespace = try NetworkNamespace(adopting: datagram.descriptors[0])
                    try await self.handler.start(uid: uid, workload: workload, namespace: namespace)
                    machine.started(uid)
                    try await self.reply(socket, error: "")
                } catch {
                    try await self.reply(socket, error: "\(error)")
                }
            case .keep:
                try await self.reply(socket, error: "")
            case .stop(let uid):
                await self.handler.stop(uid: uid)
                machine.stopped(uid)
                try await self.reply(socket, error: "")
            case .snapshotComplete(let drain):
                for uid in drain {
                    await self.handler.stop(uid: uid)
                    machine.stopped(uid)
                }
                await self.handler.snapshotComplete()
                try await self.reply(socket, error: "")
            }
        }
    }

    private func reply(_ socket: ZDSSocket, error: String) async throws {
        let bytes = ZDS.encode(ZDS.Ack(error: String(error.utf8.prefix(900)) ?? "error"))
        try await Blocking.run { try socket.send(bytes) }
    }

    static func pause(_ duration: Duration) async throws {
        try await NodeAgent.sleep(duration)
    }
}

/// Closes `socket` when the surrounding service is asked to shut down or the task is
/// cancelled, which ends any blocked receive.
func cancelWhenShuttingDown<T: Sendable>(_ socket: ZDSSocket, _ body: () async throws -> T) async throws -> T {
    try await withGracefulShutdownHandler {
        try await withTaskCancellationHandler {
            try await body()
        } onCancel: {
            socket.close()
        }
    } onGracefulShutdown: {
        socket.close()
    }
}
