internal import InternetAddress
public import MeshIdentity
public import ServiceLifecycle
public import Logging
internal import NIOCore
internal import NIOPosix
internal import NIOSSL
internal import NIOHTTP2
internal import NIOConcurrencyHelpers
internal import NIOTLS

/// An HBONE server: mutual TLS 1.3 + HTTP/2 `CONNECT` on port 15008 (ztunnel's inbound).
///
/// Each accepted connection must present a client certificate in the server identity's
/// trust domain (``HBONETLS``). Each `CONNECT` stream is validated (RFC 9113 §8.5:
/// `:method CONNECT` and an `:authority`; no `:scheme`/`:path`), handed to the decision
/// callback with the peer's identity and the parsed metadata, and then either rejected
/// with its status or connected upstream and answered `200` — never `200` before the
/// upstream connected. On graceful shutdown the server stops accepting, sends GOAWAY and
/// gives open tunnels ``HBONEConfiguration/drainDeadline`` before closing them.
public final class HBONEServer: Service, Sendable {
    /// Decides the fate of one request.
    ///
    /// Called on the connection's event loop while the stream waits, so it must not block:
    /// an answer from memory (authorization against the current config, as ztunnel does).
    /// Keep whatever it consults current elsewhere. Synchronous on purpose: an async
    /// callback cost two thread hops per tunnel.
    public typealias Decide = @Sendable (HBONEInboundRequest) -> HBONEDecision

    /// Where the server listens and as whom.
    public struct Configuration: Sendable {
        /// Listen host. Default `"::"` (all addresses, IPv4 included).
        public var host: String = "::"
        /// Listen port. Default 15008; 0 picks a free port (tests).
        public var port: Int = Int(HBONEConfiguration.port)
        /// Protocol parameters.
        public var hbone = HBONEConfiguration()
        /// An already bound listening socket to serve on instead of binding `host:port`
        /// (a pod-namespace 15008 socket from `PodSockets`); the server owns it. Default `nil`.
        public var listeningSocket: Int32?
        /// Where upstream connections come from (default: the process's own namespace).
        public var upstreamSockets: HBONESocketProvider?

        /// The defaults above.
        public init() {}
    }

    private let configuration: Configuration
    private let identity: SPIFFEID
    private let certificates: CertificateManager
    private let decide: Decide
    private let logger: Logger
    private let onTunnelClosed: @Sendable (HBONETunnelRecord) -> Void
    private let group: any EventLoopGroup
    private let contexts = TLSContextCache()
    private let verifiedChains = VerifiedChainCache()
    private let bound = BoundAddress()
    private let connections = ServerConnections()
    private let live = LiveChannels<HBONEInboundRequest>()

    /// Creates a server presenting `identity`'s certificate from `certificates`.
    ///
    /// - Parameters:
    ///   - onTunnelClosed: Called once per stream when it ends (access log, metrics).
    public init(
        configuration: Configuration = Configuration(),
        identity: SPIFFEID,
        certificates: CertificateManager,
        logger: Logger = Logger(label: "swift-hbone.server"),
        onTunnelClosed: @escaping @Sendable (HBONETunnelRecord) -> Void = { _ in },
        decide: @escaping Decide
    ) {
        self.configuration = configuration
        self.identity = identity
        self.certificates = certificates
        self.decide = decide
        self.logger = logger
        self.onTunnelClosed = onTunnelClosed
        self.group = MultiThreadedEventLoopGroup.singleton
    }

    /// The address the server is bound to, once it is (waits for ``run()`` to bind, and
    /// throws its error if binding failed).
    public var listeningAddress: HBONEAddress {
        get async throws { try await self.bound.value }
    }

    /// TLS connections currently open (for tests, metrics and leak checks).
    public var openConnections: Int { self.connections.count }

    /// Tunnels currently spliced to their upstream.
    public var liveTunnels: Int { self.live.count }

    /// Closes every live tunnel whose request `shouldClose` (ztunnel re-checks live
    /// connections when policies change and closes the ones now denied). Returns how many
    /// were closed; their streams are reset and their upstream connections closed.
    @discardableResult
    public func closeTunnels(where shouldClose: (HBONEInboundRequest) -> Bool) -> Int {
        self.live.close(where: shouldClose)
    }

    /// Binds and serves until cancelled or gracefully shut down.
    public func run() async throws {
        let connections = self.connections
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: self.group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    connections.add(channel)
                    return self.initializeConnection(channel)
                }
                .bind(to: self.configuration)
                .get()
        } catch {
            self.bound.publish(.failure(error))
            throw error
        }
        self.bound.publish(listening: channel)
        self.logger.info("HBONE server listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await channel.closeFuture.get()
                // The listener closed; the connections drain (or were closed). Returning
                // earlier would let a service group end the process mid-drain.
                await connections.waitUntilEmpty()
            } onCancel: {
                // Shutdown state first: the listener's close must find it set.
                connections.closeAll()
                channel.close(promise: nil)
            }
        } onGracefulShutdown: {
            connections.drain(deadline: self.configuration.hbone.drainDeadline)
            channel.close(promise: nil)
        }
    }

    private func initializeConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
        self.certificates.certificate(for: self.identity, on: channel.eventLoop).flatMapThrowing { certificate in
            try TunnelSocketOptions.applyToConnection(channel, self.configuration.hbone)
            let context = try self.contexts.context(for: certificate, server: true)
            let peer = NIOLockedValueBox<SPIFFEID?>(nil)
            // The connection's addresses, once for all of its streams.
            let peerAddress = channel.remoteAddress.flatMap(HBONEAddress.init(socketAddress:))
            let localAddress = channel.localAddress.flatMap(HBONEAddress.init(socketAddress:))
            let bundle = TrustBundle(roots: certificate.roots)
            let trustDomain = certificate.identity.trustDomain
            let tls = NIOSSLServerHandler(context: context) { chain, verification in
                HBONETLS.verify(
                    chain: chain, bundle: bundle, usage: .client, trustDomain: trustDomain, expected: [],
                    cache: self.verifiedChains, promise: verification
                ) { result in
                    if case .success(let identity) = result { peer.withLockedValue { $0 = identity } }
                }
            }
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(CipherSuiteGuard(role: .server, logger: self.logger))
            try sync.addHandler(tls)
            try sync.addHandler(ResumptionGuard(peer: peer, logger: self.logger))
            let configuration = self.configuration.hbone
            // Stream channels share the connection's event loop, where the drain counts them.
            let drain = NIOLoopBound(DrainHandler(), eventLoop: channel.eventLoop)
            _ = try HBONEPipeline.configure(sync, role: .server, configuration: configuration) { stream in
                stream.eventLoop.makeCompletedFuture {
                    guard let peerIdentity = peer.withLockedValue({ $0 }) else {
                        throw IdentityError.missingSPIFFEID
                    }
                    drain.value.streamOpened(stream)
                    try stream.pipeline.syncOperations.addHandler(
                        HBONEServerStreamHandler(
                            peerIdentity: peerIdentity,
                            peerAddress: peerAddress, localAddress: localAddress,
                            configuration: configuration, upstreamSockets: self.configuration.upstreamSockets, live: self.live,
                            decide: self.decide, logger: self.logger, onClosed: self.onTunnelClosed
                        )
                    )
                }
            }
            try sync.addHandler(drain.value)
        }
    }
}

extension ServerBootstrap {
    /// Binds `host:port`, or adopts the configured listening socket.
    fileprivate func bind(to configuration: HBONEServer.Configuration) -> EventLoopFuture<any Channel> {
        if let socket = configuration.listeningSocket { return self.withBoundSocket(socket) }
        return self.bind(host: configuration.host, port: configuration.port)
    }
}

/// Refuses a connection whose handshake completed without our verification callback
/// running: a TLS 1.3 session resumption (PSK), where no client certificate is presented.
/// ztunnel disables resumption; BoringSSL inside swift-nio-ssl still issues session tickets
/// and offers no switch, so a resuming client gets a clear refusal instead of a tunnel
/// without an authenticated peer.
final class ResumptionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any

    private let peer: NIOLockedValueBox<SPIFFEID?>
    private let logger: Logger

    init(peer: NIOLockedValueBox<SPIFFEID?>, logger: Logger) {
        self.peer = peer
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            guard self.peer.withLockedValue({ $0 }) != nil else {
                self.logger.warning("refusing a resumed TLS session: the peer presented no certificate", metadata: [
                    "peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
                ])
                context.close(promise: nil)
                return
            }
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Live spliced connections (HBONE tunnels by stream channel, redirected connections by
/// their TCP channel), each with what opened it, so a policy change can close the ones it
/// now denies.
final class LiveChannels<Info: Sendable>: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: (info: Info, channel: any Channel)]>([:])

    func add(_ info: Info, _ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        self.channels.withLockedValue { $0[key] = (info, channel) }
        channel.closeFuture.whenComplete { _ in self.channels.withLockedValue { $0[key] = nil } }
    }

    var count: Int { self.channels.withLockedValue { $0.count } }

    func close(where shouldClose: (Info) -> Bool) -> Int {
        let doomed = self.channels.withLockedValue { Array($0.values) }.filter { shouldClose($0.info) }
        for entry in doomed { entry.channel.close(promise: nil) }
        return doomed.count
    }
}

/// The server's open connections, for drain and forced close.
///
/// Once a drain or forced close has begun, a connection accepted afterwards is closed as
/// soon as it is added (it is still before its TLS handshake, with nothing to drain), so
/// no connection escapes the shutdown by arriving during it. ``waitUntilEmpty()`` lets
/// ``HBONEServer/run()`` return only when the last connection is gone.
final class ServerConnections: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var shuttingDown = false
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []

        mutating func remove(_ key: ObjectIdentifier) -> [CheckedContinuation<Void, Never>] {
            self.channels[key] = nil
            guard self.channels.isEmpty else { return [] }
            defer { self.emptyWaiters = [] }
            return self.emptyWaiters
        }
    }

    private let state = NIOLockedValueBox(State())

    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        let accepted = self.state.withLockedValue { state in
            guard !state.shuttingDown else { return false }
            state.channels[key] = channel
            return true
        }
        guard accepted else { return channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in
            for waiter in self.state.withLockedValue({ $0.remove(key) }) { waiter.resume() }
        }
    }

    var count: Int { self.state.withLockedValue { $0.channels.count } }

    /// Returns once a shutdown that has begun has seen every connection close; at once if
    /// none has begun (the listener closed for another reason) or none is open.
    func waitUntilEmpty() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let empty = self.state.withLockedValue { state in
                if !state.shuttingDown || state.channels.isEmpty { return true }
                state.emptyWaiters.append(waiter)
                return false
            }
            if empty { waiter.resume() }
        }
    }

    /// Stops taking connections and closes every open one now.
    func closeAll() {
        for channel in self.beginShutdown() { channel.close(promise: nil) }
    }

    /// Stops taking connections and drains every open one (``DrainHandler``: GOAWAY, a
    /// PING round trip, the final GOAWAY, closed when its last stream ends), closing
    /// whatever is still open at the deadline. A connection still waiting for our
    /// certificate (no TLS or HTTP/2 handlers yet) has nothing to drain and is closed at
    /// once: a frame written there would reach the socket as is.
    func drain(deadline: Duration) {
        for channel in self.beginShutdown() {
            channel.eventLoop.execute {
                guard let drain = try? channel.pipeline.syncOperations.handler(type: DrainHandler.self) else {
                    channel.close(promise: nil)
                    return
                }
                drain.startDrain()
                channel.eventLoop.scheduleTask(in: deadline.timeAmount) { channel.close(promise: nil) }
            }
        }
    }

    private func beginShutdown() -> [any Channel] {
        self.state.withLockedValue { state in
            state.shuttingDown = true
            return Array(state.channels.values)
        }
    }
}
