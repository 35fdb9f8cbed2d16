public import InternetAddress
public import MeshIdentity
public import Logging
internal import NIOCore
internal import NIOPosix
internal import NIOSSL
internal import NIOHTTP2
internal import NIOHPACK
internal import NIOConcurrencyHelpers

/// Where and as whom to open an HBONE tunnel.
public struct HBONETunnelTarget: Sendable, Hashable {
    /// Our identity (in shared mode: the source pod's, impersonated by the node proxy).
    public var source: SPIFFEID
    /// The peer's HBONE endpoint, normally `podIP:15008`.
    public var nextHop: HBONEAddress
    /// The server is accepted if its SPIFFE ID is any of these (workload identity plus
    /// the service's SANs). An empty list accepts no server: opening fails with
    /// ``HBONEClientError/handshake(_:)`` before connecting.
    public var expectedIdentities: [SPIFFEID]
    /// The `:authority` of the `CONNECT`, e.g. `podIP:targetPort`.
    public var authority: HBONEAddress
    /// The original client IP (part of the pool key: it may be spoofed).
    public var sourceIP: IPAddress?
    /// `forwarded`, `baggage`, `traceparent`.
    public var metadata: HBONERequestMetadata

    /// Creates a target.
    public init(
        source: SPIFFEID, nextHop: HBONEAddress, expectedIdentities: [SPIFFEID], authority: HBONEAddress,
        sourceIP: IPAddress? = nil, metadata: HBONERequestMetadata = HBONERequestMetadata()
    ) {
        self.source = source
        self.nextHop = nextHop
        self.expectedIdentities = expectedIdentities
        self.authority = authority
        self.sourceIP = sourceIP
        self.metadata = metadata
    }
}

/// Why opening a tunnel failed.
public enum HBONEClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The server answered the `CONNECT` with this status.
    case status(Int)
    /// The TLS handshake failed or the server's identity was not accepted.
    case handshake(String)
    /// The TCP connect failed or timed out.
    case connect(String)
    /// The connection or stream closed before the response.
    case closed

    public var description: String {
        switch self {
        case .status(let code): return "HBONE CONNECT answered \(code)"
        case .handshake(let detail): return "HBONE TLS handshake failed: \(detail)"
        case .connect(let detail): return "HBONE connect failed: \(detail)"
        case .closed: return "HBONE connection closed before the tunnel was established"
        }
    }
}

/// The HBONE client: a pool of mTLS HTTP/2 connections and tunnels on top of them.
///
/// Pool key = (source identity, expected identities, next hop, source IP) and the event
/// loop: a tunnel's connection lives on the same event loop as the application socket it
/// serves, so the byte pump never hops threads. Within a key, connects are single-flight
/// and a connection carries at most ``HBONEConfiguration/HTTP2/clientMaximumStreamsPerConnection``
/// streams. Certificates come from the ``CertificateManager`` per connection, so rotation
/// applies to new connections.
public final class HBONEClient: Sendable {
    struct PoolKey: Hashable, Sendable {
        var source: SPIFFEID
        var expected: [SPIFFEID]
        var nextHop: HBONEAddress
        var sourceIP: IPAddress?
        var eventLoop: ObjectIdentifier
    }

    struct PooledConnection: Sendable {
        var key: PoolKey
        var channel: any Channel
        var multiplexer: NIOHTTP2Handler.StreamMultiplexer
        /// Counts the connection's streams and closes it after a GOAWAY.
        var watcher: NIOLoopBound<PoolConnectionWatcher>

        /// Closes the connection, with a GOAWAY first (idle eviction).
        func closeGracefully() {
            let watcher = self.watcher
            self.channel.eventLoop.execute { watcher.value.closeGracefully() }
        }
    }

    private struct PoolState: Sendable {
        var machine = PoolStateMachine<PoolKey>()
        var connections: [PoolStateMachine<PoolKey>.ConnectionID: PooledConnection] = [:]
        var waiters: [PoolKey: [EventLoopPromise<Void>]] = [:]
        var connectsStarted = 0
        /// Whether the pool's eviction timer is pending.
        var evictionScheduled = false
    }

    private let certificates: CertificateManager
    let configuration: HBONEConfiguration
    private let logger: Logger
    private let group: any EventLoopGroup
    private let contexts = TLSContextCache()
    private let verifiedChains = VerifiedChainCache()
    private let pool = NIOLockedValueBox(PoolState())
    private let sockets: HBONESocketProvider?

    /// Creates a client that takes certificates from `certificates`.
    ///
    /// - Parameter sockets: Where TCP connections to the next hop come from (default: the
    ///   process's own namespace).
    public init(
        certificates: CertificateManager,
        configuration: HBONEConfiguration = HBONEConfiguration(),
        sockets: HBONESocketProvider? = nil,
        logger: Logger = Logger(label: "swift-hbone.client")
    ) {
        self.certificates = certificates
        self.configuration = configuration
        self.sockets = sockets
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup.singleton
    }

    /// Number of TLS connections this client has started (for tests and metrics).
    public var connectionsStarted: Int { self.pool.withLockedValue { $0.connectsStarted } }

    /// Number of pooled connections towards `nextHop`.
    public func pooledConnections(to nextHop: HBONEAddress) -> Int {
        self.pool.withLockedValue { state in state.connections.values.count { $0.key.nextHop == nextHop } }
    }

    /// Closes every pooled connection (their tunnels end); the client stays usable and
    /// connects again on the next open.
    public func closeAllConnections() async {
        // Out of the pool first, so no open can pick a connection that is closing.
        let connections: [PooledConnection] = self.pool.withLockedValue { state in
            let all = state.connections
            for (id, connection) in all { state.machine.remove(connection.key, id) }
            state.connections = [:]
            return Array(all.values)
        }
        for connection in connections {
            try? await connection.channel.close()
        }
    }

    /// Streams open on pooled connections towards `nextHop` (for tests and metrics).
    public func openStreams(to nextHop: HBONEAddress) -> Int {
        self.pool.withLockedValue { state in
            Set(state.connections.values.filter { $0.key.nextHop == nextHop }.map(\.key)).reduce(0) {
                $0 + state.machine.streamCount(for: $1)
            }
        }
    }

    // MARK: Opening streams

    /// An established tunnel stream: reads paused (`autoRead` off), the client handler
    /// removed, and the frames that arrived right after the 200 (to be replayed first).
    struct OpenedStream {
        var channel: any Channel
        var early: [HTTP2Frame.FramePayload]
        /// The stream closed right after its 200, in the same read burst (a reset, the
        /// connection lost): a handler added now sees no `channelInactive`.
        var closed: Bool
    }

    /// Opens a `CONNECT` stream for `target` on `eventLoop` and completes once the server
    /// answered 200.
    func openStream(_ target: HBONETunnelTarget, on eventLoop: any EventLoop) -> EventLoopFuture<OpenedStream> {
        guard !target.expectedIdentities.isEmpty else {
            // The verifier would refuse every server; say why before connecting.
            return eventLoop.makeFailedFuture(HBONEClientError.handshake("no expected server identity given for \(target.nextHop)"))
        }
        let key = PoolKey(
            source: target.source,
            expected: target.expectedIdentities.count > 1 ? target.expectedIdentities.sorted() : target.expectedIdentities,
            nextHop: target.nextHop,
            sourceIP: target.sourceIP, eventLoop: ObjectIdentifier(eventLoop)
        )
        // Retried once when the server cannot have processed the CONNECT: RFC 9113 §8.7, a
        // stream reset with REFUSED_STREAM "has not been processed" (a CONNECT that crossed
        // a server's GOAWAY or hit its stream limit); a stream above the last stream ID of
        // the server's GOAWAY (§6.8); or the HEADERS were not sent because the server's
        // GOAWAY arrived, or a close began, after the checkout. The GOAWAY or the close took
        // that connection out of the pool, so the retry gets another. Nothing of the
        // tunnel's bytes is sent before the 200.
        return self.openStreamOnce(key, target, on: eventLoop).flatMapError { error in
            let refused = (error as? NIOHTTP2Errors.StreamClosed)?.errorCode == .refusedStream
            // The stream could not be created: its connection closed after the checkout
            // (after a GOAWAY on an idle connection, the client closes it at once).
            let notCreated = (error as? ChannelError) == .ioOnClosedChannel
            guard refused || notCreated || error is RequestNotProcessed else { return eventLoop.makeFailedFuture(error) }
            return self.openStreamOnce(key, target, on: eventLoop).flatMapErrorThrowing { error in
                throw error is RequestNotProcessed ? HBONEClientError.closed : error
            }
        }
    }

    private func openStreamOnce(_ key: PoolKey, _ target: HBONETunnelTarget, on eventLoop: any EventLoop) -> EventLoopFuture<OpenedStream> {
        self.checkout(key, target: target, on: eventLoop).flatMap { (id, connection) in
            let promise = eventLoop.makePromise(of: Void.self)
            // The stream shares the connection's event loop, which is `eventLoop`: every
            // closure below runs there, so the handler never crosses threads.
            let handler = NIOLoopBound(
                HBONEClientStreamHandler(target: target, response: promise, connection: connection.watcher), eventLoop: eventLoop
            )
            let created = connection.multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(handler.value)
                }
            }
            created.whenFailure { error in
                // No stream (its connection closed after the checkout): no handler will
                // answer the response, and no stream close will release the checkout.
                promise.fail(error)
                self.release(key, id)
            }
            return created.flatMap { stream in
                let watcher = connection.watcher
                watcher.value.streamOpened()
                // On the stream's event loop, which is the connection's.
                stream.closeFuture.whenComplete { _ in
                    watcher.value.streamClosed()
                    self.release(key, id)
                }
                return promise.futureResult.map {
                    stream.pipeline.syncOperations.removeHandler(handler.value, promise: nil)
                    return OpenedStream(channel: stream, early: handler.value.early, closed: handler.value.closedAfterResponse)
                }
            }
        }
    }

    /// Opens a tunnel for `target` and splices it with the TCP channel `tcp`.
    ///
    /// Call on `tcp`'s event loop as soon as the channel exists (it must have `autoRead`
    /// off and `allowRemoteHalfClosure` on). The TCP side of the pump is attached at once,
    /// so bytes and a FIN that arrive while the tunnel is being set up are kept and sent
    /// when the stream is open. `onClose` gets the byte counts when both directions are done.
    func splice(
        tcp: any Channel, target: HBONETunnelTarget, onClose: @escaping @Sendable (TunnelByteCounts) -> Void
    ) -> EventLoopFuture<Void> {
        let glue = NIOLoopBound(TunnelGlue(onClose: onClose), eventLoop: tcp.eventLoop)
        do {
            try tcp.pipeline.syncOperations.addHandler(glue.value.tcp)
        } catch {
            return tcp.eventLoop.makeFailedFuture(error)
        }
        let spliced = self.openStream(target, on: tcp.eventLoop).flatMapThrowing { opened in
            let glue = glue.value
            let stream = opened.channel
            try stream.pipeline.syncOperations.addHandler(glue.stream)
            for payload in opened.early { glue.stream.channelReadDelivered(payload) }
            if opened.closed { glue.stream.closedBeforeAttached() }
            glue.tcp.flush()
            TunnelSocketOptions.setAutoRead(stream, true)
            TunnelSocketOptions.setAutoRead(tcp, true)
            tcp.read()
            stream.read()
        }
        // A tunnel that never came up gets the caller's failure record only, not also an
        // `onClose` with bytes that went nowhere when the caller closes the TCP side.
        spliced.whenFailure { _ in glue.value.abandon() }
        return spliced
    }

    // MARK: Pool

    private func checkout(
        _ key: PoolKey, target: HBONETunnelTarget, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(Int, PooledConnection)> {
        enum Step { case use(Int, PooledConnection), wait(EventLoopFuture<Void>), connect }
        let step: Step = self.pool.withLockedValue { state in
            switch state.machine.checkout(key) {
            case .use(let id):
                return .use(id, state.connections[id]!)
            case .wait:
                let promise = eventLoop.makePromise(of: Void.self)
                state.waiters[key, default: []].append(promise)
                return .wait(promise.futureResult)
            case .connect:
                state.connectsStarted += 1
                return .connect
            }
        }
        switch step {
        case .use(let id, let connection):
            return eventLoop.makeSucceededFuture((id, connection))
        case .wait(let future):
            return future.flatMap { self.checkout(key, target: target, on: eventLoop) }
        case .connect:
            return self.connect(key, target: target, on: eventLoop)
        }
    }

    private func connect(
        _ key: PoolKey, target: HBONETunnelTarget, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(Int, PooledConnection)> {
        let result = self.certificates.certificate(for: target.source, on: eventLoop).flatMap { certificate in
            self.makeConnection(key, certificate: certificate, target: target, on: eventLoop)
        }
        result.whenComplete { outcome in
            let waiters: [EventLoopPromise<Void>] = self.pool.withLockedValue { state in
                // A success was pooled when it was counted (`makeConnection`).
                if case .failure = outcome { state.machine.connectFailed(key) }
                return state.waiters.removeValue(forKey: key) ?? []
            }
            for waiter in waiters {
                switch outcome {
                case .success: waiter.succeed()
                case .failure(let error): waiter.fail(error)
                }
            }
        }
        return result.map { id, connection in
            connection.channel.closeFuture.whenComplete { _ in self.discard(key, id) }
            return (id, connection)
        }
    }

    private func makeConnection(
        _ key: PoolKey, certificate: WorkloadCertificate, target: HBONETunnelTarget, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(Int, PooledConnection)> {
        let configuration = self.configuration
        let context: NIOSSLContext
        do {
            context = try self.contexts.context(for: certificate, server: false)
        } catch {
            return eventLoop.makeFailedFuture(HBONEClientError.handshake("\(error)"))
        }
        let bundle = TrustBundle(roots: certificate.roots)
        let expected = target.expectedIdentities
        let verifyError = NIOLockedValueBox<IdentityError?>(nil)
        let handshake = eventLoop.makePromise(of: Void.self)
        let multiplexerBox = NIOLockedValueBox<(NIOHTTP2Handler.StreamMultiplexer, NIOLoopBound<PoolConnectionWatcher>)?>(nil)
        // The pool ID once the connection is pooled; a retirement (GOAWAY, a close begun) or
        // the server's stream limit before that is kept here instead.
        let slot = NIOLockedValueBox<(id: Int?, retired: Bool, maximumStreams: Int?)>((nil, false, nil))
        let ownLimit = configuration.http2.clientMaximumStreamsPerConnection
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try TunnelSocketOptions.applyToConnection(channel, configuration)
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: nil) { chain, verification in
                        HBONETLS.verify(
                            chain: chain, bundle: bundle, usage: .server, trustDomain: nil, expected: expected,
                            cache: self.verifiedChains, promise: verification
                        ) { result in
                            if case .failure(let error) = result { verifyError.withLockedValue { $0 = error } }
                        }
                    }
                    // Out of the pool on the server's GOAWAY, and as soon as a close begins.
                    let watcher = PoolConnectionWatcher(closeDeadline: configuration.drainDeadline.timeAmount) { [weak self] in
                        let id: Int? = slot.withLockedValue { slot in
                            slot.retired = true
                            return slot.id
                        }
                        if let id { self?.discard(key, id) }
                    } onMaximumStreams: { [weak self] peerLimit in
                        let id: Int? = slot.withLockedValue { slot in
                            slot.maximumStreams = peerLimit
                            return slot.id
                        }
                        if let id, let self {
                            self.pool.withLockedValue { $0.machine.limit(key, id, maximumStreams: min(ownLimit, peerLimit)) }
                        }
                    }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(CipherSuiteGuard(role: .client))
                    try sync.addHandler(tls)
                    try sync.addHandler(HandshakeWatcher(promise: handshake))
                    try sync.addHandler(ConnectionCloseObserver(watcher: watcher))
                    let multiplexer = try HBONEPipeline.configure(sync, role: .client, configuration: configuration) { stream in
                        // Servers do not push; refuse any stream the server opens.
                        stream.close()
                    }
                    try sync.addHandler(watcher)
                    multiplexerBox.withLockedValue { $0 = (multiplexer, NIOLoopBound(watcher, eventLoop: channel.eventLoop)) }
                }
            }
        return bootstrap.connect(to: target.nextHop, from: target.sourceIP, sockets: self.sockets, on: eventLoop)
            .flatMapError { error in
                handshake.fail(error)
                return eventLoop.makeFailedFuture(HBONEClientError.connect("\(target.nextHop): \(error)"))
            }
            .flatMap { channel in
                handshake.futureResult.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    if let identityError = verifyError.withLockedValue({ $0 }) {
                        throw HBONEClientError.handshake(identityError.description)
                    }
                    throw HBONEClientError.handshake("\(error)")
                }.flatMapThrowing { () throws -> (Int, PooledConnection) in
                    guard let (multiplexer, watcher) = multiplexerBox.withLockedValue({ $0 }) else { throw HBONEClientError.closed }
                    let connection = PooledConnection(key: key, channel: channel, multiplexer: multiplexer, watcher: watcher)
                    // Counted and stored under one lock: a checkout from another thread
                    // that is handed this ID finds the connection.
                    // The slot's lock is held around the pool's, as the watcher's
                    // callbacks never do, so a limit that arrives now is not lost.
                    let (id, retired) = slot.withLockedValue { slot in
                        let id = self.pool.withLockedValue { state in
                            let id = state.machine.connected(key, maximumStreams: min(ownLimit, slot.maximumStreams ?? ownLimit))
                            state.connections[id] = connection
                            return id
                        }
                        slot.id = id
                        return (id, slot.retired)
                    }
                    // Handed to this checkout (its stream was counted), never to later ones.
                    if retired { self.discard(key, id) }
                    return (id, connection)
                }
            }
    }

    private func release(_ key: PoolKey, _ id: Int) {
        let now = Duration.nanoseconds(Int64(NIODeadline.now().uptimeNanoseconds))
        let timeout = self.configuration.poolIdleTimeout
        let schedule: (any EventLoop)? = self.pool.withLockedValue { state in
            guard state.machine.release(key, id, now: now), timeout > .zero, !state.evictionScheduled,
                let connection = state.connections[id]
            else { return nil }
            state.evictionScheduled = true
            return connection.channel.eventLoop
        }
        if timeout <= .zero { return self.evictIdle(on: nil) }
        if let loop = schedule {
            loop.scheduleTask(in: timeout.timeAmount) { [weak self] in self?.evictIdle(on: loop) }
        }
    }

    /// Closes the connections idle for `poolIdleTimeout`, and re-arms the pool's one timer
    /// (on `loop`) for the next connection that will be.
    private func evictIdle(on loop: (any EventLoop)?) {
        let now = Duration.nanoseconds(Int64(NIODeadline.now().uptimeNanoseconds))
        let timeout = self.configuration.poolIdleTimeout
        let (evicted, next): ([PooledConnection], Duration?) = self.pool.withLockedValue { state in
            let evicted = state.machine.evictIdle(now: now, timeout: timeout).compactMap { _, id in
                state.connections.removeValue(forKey: id)
            }
            let next = loop == nil ? nil : state.machine.nextEviction(timeout: timeout)
            state.evictionScheduled = next != nil
            return (evicted, next)
        }
        for connection in evicted { connection.closeGracefully() }
        if let loop, let next {
            loop.scheduleTask(in: max(.zero, next - now).timeAmount) { [weak self] in self?.evictIdle(on: loop) }
        }
    }

    private func discard(_ key: PoolKey, _ id: Int) {
        self.pool.withLockedValue { state in
            state.machine.remove(key, id)
            state.connections[id] = nil
        }
    }
}
