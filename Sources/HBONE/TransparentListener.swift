public import InternetAddress
public import Logging
public import ServiceLifecycle
internal import NIOCore
internal import NIOPosix
internal import NIOConcurrencyHelpers

/// Serves redirected TCP connections (iptables `REDIRECT` in a pod, notes: outbound 15001
/// and inbound plaintext 15006): for each accepted connection it reads the destination the
/// app was going to (`SO_ORIGINAL_DST`), asks `route` (synchronously, on the connection's
/// event loop: it must not block), and splices the connection into an
/// HBONE tunnel or a plain TCP connection, or closes it. ztunnel's outbound and inbound
/// plaintext listeners, minus the policy, which the `route` callback brings.
public final class TransparentListener: Service, Sendable {
    /// One redirected connection.
    public struct Connection: Sendable {
        /// The app's address (the TCP peer).
        public var source: HBONEAddress?
        /// Where it was going before the redirect.
        public var originalDestination: HBONEAddress
    }

    /// What to do with a connection.
    public enum Route: Sendable {
        /// Through an HBONE tunnel.
        case tunnel(HBONETunnelTarget)
        /// Plain TCP to `address` (from `source` when the socket provider supports it).
        case direct(HBONEAddress, source: IPAddress?)
        /// Close it; `reason` goes to the record.
        case reject(reason: String)
    }

    /// A finished connection, for access logs and metrics.
    public struct Record: Sendable {
        public var connection: Connection
        /// `tunnel`, `direct` or `reject`.
        public var route: String
        public var bytes: TunnelByteCounts
        /// Why it failed, if it did.
        public var error: String?
        /// From accept to the end of the connection (ztunnel's access-log `duration`).
        public var duration: Duration = .zero
    }

    private let listeningSocket: Int32
    private let client: HBONEClient
    private let sockets: HBONESocketProvider?
    private let route: @Sendable (Connection) -> Route
    private let onClosed: @Sendable (Record) -> Void
    private let logger: Logger
    private let bound = BoundAddress()
    private let live = LiveChannels<Connection>()
    /// Every accepted connection, routed or not: cancellation (the pod is gone) closes them all.
    private let accepted = LiveChannels<Void>()

    /// A listener on an already bound and listening socket (created in the pod's namespace).
    public init(
        listeningSocket: Int32, client: HBONEClient, sockets: HBONESocketProvider?,
        logger: Logger = Logger(label: "swift-hbone.transparent"),
        onClosed: @escaping @Sendable (Record) -> Void = { _ in },
        route: @escaping @Sendable (Connection) -> Route
    ) {
        self.listeningSocket = listeningSocket
        self.client = client
        self.sockets = sockets
        self.route = route
        self.onClosed = onClosed
        self.logger = logger
    }

    /// The bound address once serving.
    public var listeningAddress: HBONEAddress {
        get async throws { try await self.bound.value }
    }

    /// Connections spliced and still open.
    public var liveConnections: Int { self.live.count }

    /// Closes every live connection that `shouldClose` picks (ztunnel re-checks live
    /// connections when policies change and closes the ones now denied). Returns how many.
    @discardableResult
    public func closeConnections(where shouldClose: (Connection) -> Bool) -> Int {
        self.live.close(where: shouldClose)
    }

    public func run() async throws {
        let handler = RouteOnActive.Shared(
            client: self.client, sockets: self.sockets, route: self.route, onClosed: self.onClosed, live: self.live, logger: self.logger
        )
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { [accepted, configuration = self.client.configuration] channel in
                    accepted.add((), channel)
                    return channel.eventLoop.makeCompletedFuture {
                        try TunnelSocketOptions.applyToTCPSide(channel, configuration)
                        try channel.pipeline.syncOperations.addHandler(RouteOnActive(shared: handler))
                    }
                }
                .withBoundSocket(self.listeningSocket)
                .get()
        } catch {
            self.bound.publish(.failure(error))
            throw error
        }
        self.bound.publish(listening: channel)
        // Graceful shutdown stops accepting and lets open connections finish; cancellation
        // (the pod was removed) also closes every connection it accepted.
        await serveUntilShutdown(channel)
        if Task.isCancelled { _ = self.accepted.close { _ in true } }
    }
}

/// Reads the original destination, asks for the route, then splices. Until the splice is
/// in place it keeps whatever arrives: NIO reads a peer's bytes and FIN as soon as it sees
/// the FIN even with `autoRead` off, and a client that sends and half-closes at once must
/// not lose either while the route is being decided.
final class RouteOnActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    struct Shared: Sendable {
        let client: HBONEClient
        let sockets: HBONESocketProvider?
        let route: @Sendable (TransparentListener.Connection) -> TransparentListener.Route
        let onClosed: @Sendable (TransparentListener.Record) -> Void
        let live: LiveChannels<TransparentListener.Connection>
        let logger: Logger
    }

    let shared: Shared
    private var context: ChannelHandlerContext?
    private var early: [NIOAny] = []
    private var inputClosed = false
    private var released = false

    init(shared: Shared) { self.shared = shared }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.released { context.fireChannelRead(data) } else { self.early.append(data) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !self.released, let event = event as? ChannelEvent, event == .inputClosed {
            self.inputClosed = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Hands what arrived so far to the handlers added after this one, then steps aside.
    func release() {
        guard !self.released, let context = self.context else { return }
        self.released = true
        let early = self.early
        self.early = []
        for data in early { context.fireChannelRead(data) }
        if !early.isEmpty { context.fireChannelReadComplete() }
        if self.inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.fireChannelActive()
        let shared = self.shared
        let source = channel.remoteAddress.flatMap(HBONEAddress.init(socketAddress:)).map { HBONEAddress(ip: $0.ip.unmapped, port: $0.port) }
        let this = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let opened = ContinuousClock.now
        Self.originalDestination(of: channel).flatMap { destination -> EventLoopFuture<(TransparentListener.Connection, TransparentListener.Route)> in
            let connection = TransparentListener.Connection(source: source, originalDestination: destination)
            return channel.eventLoop.makeSucceededFuture((connection, shared.route(connection)))
        }.whenComplete { result in
            switch result {
            case .failure(let error):
                shared.logger.warning("no original destination", metadata: ["error": "\(error)"])
                channel.close(promise: nil)
            case .success(let (connection, route)):
                Self.splice(channel, connection, route, shared, opened: opened, release: { this.value.release() })
            }
        }
    }

    private static func splice(
        _ channel: any Channel, _ connection: TransparentListener.Connection, _ route: TransparentListener.Route, _ shared: Shared,
        opened: ContinuousClock.Instant, release: @escaping @Sendable () -> Void
    ) {
        // Exactly one record per connection, whichever path ends it first.
        let recorded = NIOLockedValueBox(false)
        let onClosed = shared.onClosed
        let record: @Sendable (TransparentListener.Record) -> Void = { record in
            let first = recorded.withLockedValue { done in
                defer { done = true }
                return !done
            }
            var record = record
            record.duration = opened.duration(to: .now)
            if first { onClosed(record) }
        }
        let shared = Shared(
            client: shared.client, sockets: shared.sockets, route: shared.route, onClosed: record, live: shared.live, logger: shared.logger
        )
        if case .reject = route {} else { shared.live.add(connection, channel) }
        switch route {
        case .reject(let reason):
            shared.onClosed(.init(connection: connection, route: "reject", bytes: .init(), error: reason))
            Self.reset(channel)
        case .tunnel(let target):
            shared.client.splice(tcp: channel, target: target) { counts in
                shared.onClosed(.init(connection: connection, route: "tunnel", bytes: counts, error: nil))
            }.whenFailure { error in
                shared.onClosed(.init(connection: connection, route: "tunnel", bytes: .init(), error: "\(error)"))
                Self.reset(channel)
            }
            // The pump's TCP side is in the pipeline now and keeps early bytes and FIN.
            release()
        case .direct(let address, let source):
            let deadline = shared.client.configuration.drainDeadline.timeAmount
            let relay = NIOLoopBound(TCPRelay(closeDeadline: deadline) { counts in
                shared.onClosed(.init(connection: connection, route: "direct", bytes: counts, error: nil))
            }, eventLoop: channel.eventLoop)
            let clientSide = NIOLoopBound(relay.value.client, eventLoop: channel.eventLoop)
            do {
                try channel.pipeline.syncOperations.addHandler(clientSide.value)
            } catch {
                channel.close(promise: nil)
                return
            }
            let upstreamSide = NIOLoopBound(relay.value.upstream, eventLoop: channel.eventLoop)
            let configuration = shared.client.configuration
            let bootstrap = ClientBootstrap(group: channel.eventLoop)
                .channelInitializer { upstream in
                    upstream.eventLoop.makeCompletedFuture {
                        try TunnelSocketOptions.applyToTCPSide(upstream, configuration)
                        try upstream.pipeline.syncOperations.addHandler(upstreamSide.value)
                    }
                }
            bootstrap.connect(to: address, from: source, sockets: shared.sockets, on: channel.eventLoop).whenComplete { result in
                switch result {
                case .success:
                    release()
                    relay.value.start()
                case .failure(let error):
                    shared.onClosed(.init(connection: connection, route: "direct", bytes: .init(), error: "connect \(address): \(error)"))
                    relay.value.finish(graceful: false)
                }
            }
        }
    }

    /// Closes with a reset (`SO_LINGER` 0), as ztunnel ends a connection it refuses: the app
    /// sees `ECONNRESET`, not an orderly end of stream.
    static func reset(_ channel: any Channel) {
        guard let provider = channel as? any SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        provider.unsafeSetSocketOption(level: SocketOptionLevel(1) /* SOL_SOCKET */, name: SocketOptionName(13) /* SO_LINGER */, value: RawLinger(onOff: 1, seconds: 0))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    /// `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6 connections) through NIO's socket options.
    static func originalDestination(of channel: any Channel) -> EventLoopFuture<HBONEAddress> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
        }
        let local = channel.localAddress.flatMap(HBONEAddress.init(socketAddress:))
        if let local, local.ip.unmapped.isIPv6 {
            let future: EventLoopFuture<RawSocketAddressV6> = provider.unsafeGetSocketOption(level: SocketOptionLevel(41), name: SocketOptionName(80))
            return future.map { address in
                HBONEAddress(ip: .v6(withUnsafeBytes(of: address.address) { Array($0) }), port: UInt16(bigEndian: address.port))
            }
        }
        let future: EventLoopFuture<RawSocketAddressV4> = provider.unsafeGetSocketOption(level: SocketOptionLevel(0), name: SocketOptionName(80))
        return future.map { address in
            HBONEAddress(ip: IPAddress(bytes: withUnsafeBytes(of: address.address) { Array($0) })!, port: UInt16(bigEndian: address.port))
        }
    }
}

// `sockaddr_in`, `sockaddr_in6` and `struct linger` laid out in Swift: the C structs are
// declared both by Glibc and by NIO's C shims, and which one a clean build picks differs,
// so their members cannot be named here.

/// `struct sockaddr_in` (16 bytes).
struct RawSocketAddressV4 {
    var family: UInt16 = 0
    var port: UInt16 = 0
    var address: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
    var zero: UInt64 = 0
}

/// `struct sockaddr_in6` (28 bytes).
struct RawSocketAddressV6 {
    var family: UInt16 = 0
    var port: UInt16 = 0
    var flowInfo: UInt32 = 0
    var address: (UInt64, UInt64) = (0, 0)
    var scope: UInt32 = 0
}

/// `struct linger`.
struct RawLinger {
    var onOff: Int32
    var seconds: Int32
}
