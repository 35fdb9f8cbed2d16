public import ServiceLifecycle
public import Logging
internal import NIOCore
internal import NIOPosix
internal import NIOConcurrencyHelpers

/// A local TCP listener whose every connection is carried to one fixed target through an
/// HBONE tunnel: the outbound half of a node proxy with a static route. Useful on its own
/// ("reach this mesh workload from here") and as the smallest end-to-end use of
/// ``HBONEClient``.
public final class HBONEForwarder: Service, Sendable {
    private let host: String
    private let port: Int
    private let client: HBONEClient
    private let target: HBONETunnelTarget
    private let logger: Logger
    /// Where accepted connections live; the pool keeps one HBONE connection per event loop.
    private let group: any EventLoopGroup
    private let bound = BoundAddress()

    /// Listens on `host:port` (port 0 picks one) and forwards to `target` through `client`.
    public convenience init(
        host: String = "127.0.0.1", port: Int, client: HBONEClient, target: HBONETunnelTarget,
        logger: Logger = Logger(label: "swift-hbone.forwarder")
    ) {
        self.init(host: host, port: port, client: client, target: target, logger: logger, group: MultiThreadedEventLoopGroup.singleton)
    }

    /// The same on `group`: a single event loop puts every tunnel on one pooled connection
    /// (tests).
    init(host: String = "127.0.0.1", port: Int, client: HBONEClient, target: HBONETunnelTarget, logger: Logger, group: any EventLoopGroup) {
        self.host = host
        self.port = port
        self.client = client
        self.target = target
        self.logger = logger
        self.group = group
    }

    /// The bound port once ``run()`` has bound, else `nil`.
    public var boundPort: Int? { self.bound.current.map { Int($0.port) } }

    /// The bound port, once ``run()`` has bound (throws its error if binding failed).
    public var listeningPort: Int {
        get async throws { Int(try await self.bound.value.port) }
    }

    /// Accepts and forwards until cancelled or gracefully shut down.
    public func run() async throws {
        let client = self.client
        let target = self.target
        let logger = self.logger
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [configuration = self.client.configuration] channel in
                channel.eventLoop.makeCompletedFuture {
                    try TunnelSocketOptions.applyToTCPSide(channel, configuration)
                    try channel.pipeline.syncOperations.addHandler(
                        SpliceOnActive(client: client, target: target, logger: logger)
                    )
                }
            }
            .bind(host: self.host, port: self.port)
            .get()
        } catch {
            self.bound.publish(.failure(error))
            throw error
        }
        self.bound.publish(listening: channel)
        await serveUntilShutdown(channel)
    }
}

/// Starts the tunnel once the accepted socket is registered and active, then gets out of
/// the way (the pump's TCP side takes over and keeps anything that arrives meanwhile).
final class SpliceOnActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let client: HBONEClient
    private let target: HBONETunnelTarget
    private let logger: Logger

    init(client: HBONEClient, target: HBONETunnelTarget, logger: Logger) {
        self.client = client
        self.target = target
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let logger = self.logger
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
        self.client.splice(tcp: channel, target: self.target) { counts in
            logger.debug("tunnel closed", metadata: ["sent": "\(counts.sent)", "received": "\(counts.received)"])
        }.whenFailure { error in
            logger.warning("tunnel failed", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
        context.fireChannelActive()
    }
}
