import Foundation
public import Logging
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
public import ServiceLifecycle

/// The agent's plugin API: HTTP/1.1 on `<run dir>/pluginevent.sock` (dir 0750, socket 0666,
/// a stale socket file replaced), `POST /cmdadd` with a ``CNIPluginEvent`` body → 200 with
/// an empty body when the pod is enrolled; 400 for an empty or undecodable body; 500 with
/// the error text for any enrollment failure (istio-cni `cni-watcher.go`). Other paths: 404.
public struct PluginEventServer: Service {
    let agent: NodeAgent
    let metadata: any PodMetadataSource
    /// The socket path.
    public let socketPath: String
    let logger: Logger
    private let ready: BoundSignal

    /// A server for `agent` on the socket in `runDirectory`.
    public init(agent: NodeAgent, metadata: any PodMetadataSource, runDirectory: String, logger: Logger = Logger(label: "swift-hbone.agent")) {
        self.agent = agent
        self.metadata = metadata
        self.socketPath = PluginEventSocket.path(in: runDirectory)
        self.logger = logger
        self.ready = BoundSignal()
    }

    /// Returns once the socket is listening (or the server failed to start).
    public func waitUntilListening() async throws {
        try await self.ready.wait()
    }

    public func run() async throws {
        let directory = (self.socketPath as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
            let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(unixDomainSocketPath: self.socketPath, cleanupExistingSocketFile: true) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                    }
                }
            chmod(self.socketPath, 0o666)
            self.ready.signal(nil)
            try await withGracefulShutdownHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    try await server.executeThenClose { connections in
                        for try await connection in connections {
                            group.addTask { await self.serve(connection) }
                        }
                    }
                }
            } onGracefulShutdown: {
                server.channel.close(promise: nil)
            }
        } catch {
            self.ready.signal(error)
            throw error
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                    body.clear()
                case .body(var chunk):
                    guard body.readableBytes + chunk.readableBytes <= 1 << 20 else {
                        try await Self.respond(outbound, .payloadTooLarge, "body over 1 MiB")
                        return
                    }
                    body.writeBuffer(&chunk)
                case .end:
                    guard let head else { return }
                    let (status, text) = await self.answer(head, body)
                    try await Self.respond(outbound, status, text)
                    return
                }
            }
        }
    }

    private func answer(_ head: HTTPRequestHead, _ body: ByteBuffer) async -> (HTTPResponseStatus, String) {
        guard head.uri == "/cmdadd" else { return (.notFound, "not found") }
        guard head.method == .POST else { return (.methodNotAllowed, "POST only") }
        guard body.readableBytes > 0 else { return (.badRequest, "empty body") }
        let event: CNIPluginEvent
        do {
            event = try JSONDecoder().decode(CNIPluginEvent.self, from: Data(body.readableBytesView))
        } catch {
            return (.badRequest, "invalid event: \(error)")
        }
        do {
            try await self.agent.handle(event, metadata: self.metadata)
            return (.ok, "")
        } catch {
            self.logger.warning("cmdadd failed", metadata: ["pod": "\(event.PodNamespace)/\(event.PodName)", "error": "\(error)"])
            return (.internalServerError, error.description)
        }
    }

    private static func respond(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, _ status: HTTPResponseStatus, _ text: String
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: "\(text.utf8.count)")
        headers.add(name: "Connection", value: "close")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
        if !text.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(string: text)))) }
        try await outbound.write(.end(nil))
    }
}

/// A one-shot "listening or failed" signal.
///
/// `@unchecked Sendable` is safe: all state is behind the lock.
final class BoundSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var outcome: Result<Void, any Error>?
    private var waiters: [CheckedContinuation<Void, any Error>] = []

    func signal(_ error: (any Error)?) {
        self.lock.lock()
        guard self.outcome == nil else { self.lock.unlock(); return }
        let outcome: Result<Void, any Error> = error.map { .failure($0) } ?? .success(())
        self.outcome = outcome
        let waiters = self.waiters
        self.waiters = []
        self.lock.unlock()
        for waiter in waiters { waiter.resume(with: outcome) }
    }

    func wait() async throws {
        try await withCheckedThrowingContinuation { continuation in
            self.lock.lock()
            if let outcome = self.outcome {
                self.lock.unlock()
                continuation.resume(with: outcome)
            } else {
                self.waiters.append(continuation)
                self.lock.unlock()
            }
        }
    }
}
