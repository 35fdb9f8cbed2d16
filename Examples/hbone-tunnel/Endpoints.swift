import InternetAddress
import ArgumentParser
import Foundation
import HBONE
import Logging
import MeshIdentity
import ServiceLifecycle
import UnixSignals

/// Parses `a.b.c.d:port` or `[v6]:port` into an ``HBONEAddress``.
func parseAddress(_ text: String) throws -> HBONEAddress {
    guard let address = HBONEAddress(authority: text) else {
        throw ValidationError("'\(text)' is not an IP address and port (a.b.c.d:port or [v6]:port)")
    }
    return address
}

/// Parses a listen address; unlike an authority, port 0 (pick one) is allowed.
func parseListen(_ text: String) throws -> (host: String, port: Int) {
    if text.hasSuffix(":0") {
        let host = String(text.dropLast(2))
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        guard IPAddress(bare) != nil else { throw ValidationError("'\(text)': '\(host)' is not an IP address") }
        return (bare, 0)
    }
    let address = try parseAddress(text)
    return ("\(address.ip)", Int(address.port))
}

/// A logger at `level` (the example logs to stderr; stdout carries only `listening <port>`).
func makeLogger(_ label: String, level: Logger.Level) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = level
    return logger
}

/// A certificate manager over the mesh CA in `dir`, run as a service next to the endpoint.
func makeManager(_ ca: CAOptions) throws -> CertificateManager {
    CertificateManager(provider: EmbeddedCAProvider(authority: try ca.load()))
}

/// Runs `services` until SIGINT/SIGTERM, printing `listening <port>` once `port` reports one.
func runServices(_ services: [any Service], port: @escaping @Sendable () async throws -> Int, logger: Logger) async throws {
    let group = ServiceGroup(
        configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
    )
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        tasks.addTask {
            let line = "listening \(try await port())\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
        try await tasks.waitForAll()
    }
}

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve HBONE: accept mTLS HTTP/2 CONNECT and forward each tunnel to its authority (or --upstream)."
    )

    @OptionGroup var ca: CAOptions

    @Option(help: "The identity this server presents.")
    var identity = "spiffe://cluster.local/ns/default/sa/httpbin"

    @Option(help: "Address to listen on.")
    var listen = "127.0.0.1:15008"

    @Option(help: "Forward every tunnel here instead of to its :authority.")
    var upstream: String?

    @Flag(help: "Log each tunnel.")
    var verbose = false

    @Flag(help: "Inbound DATA through nio-http2's stream channels, not spliced (for comparison).")
    var noSplice = false

    func run() async throws {
        let logger = makeLogger("hbone-tunnel.server", level: self.verbose ? .debug : .warning)
        let manager = try makeManager(self.ca)
        let listen = try parseListen(self.listen)
        let upstream = try self.upstream.map(parseAddress)
        var configuration = HBONEServer.Configuration()
        configuration.host = listen.host
        configuration.port = listen.port
        configuration.hbone.splicesData = !self.noSplice
        let server = HBONEServer(
            configuration: configuration, identity: try SPIFFEID(parsing: self.identity), certificates: manager,
            logger: logger,
            onTunnelClosed: { record in
                logger.debug("tunnel closed", metadata: [
                    "status": "\(record.status.code)", "sent": "\(record.bytes.sent)", "received": "\(record.bytes.received)",
                ])
            }
        ) { request in
            .forward(to: upstream ?? request.target)
        }
        try await runServices([manager, server], port: { Int(try await server.listeningAddress.port) }, logger: logger)
    }
}

struct Client: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accept plain TCP and carry each connection in its own HBONE tunnel (one pooled mTLS connection)."
    )

    @OptionGroup var ca: CAOptions

    @Option(help: "The identity this client presents.")
    var identity = "spiffe://cluster.local/ns/default/sa/sleep"

    @Option(help: "Address to accept plain TCP on.")
    var listen = "127.0.0.1:15001"

    @Option(help: "The HBONE server (next hop).")
    var connect: String

    @Option(help: "The :authority of each CONNECT (the destination behind the server).")
    var authority: String

    @Option(help: "The identity the server must present (repeatable).")
    var expect: [String] = ["spiffe://cluster.local/ns/default/sa/httpbin"]

    @Flag(help: "No pooling: every tunnel its own mTLS connection (and handshake), closed with it.")
    var poolOff = false

    @Flag(help: "Inbound DATA through nio-http2's stream channels, not spliced (for comparison).")
    var noSplice = false

    func run() async throws {
        let logger = makeLogger("hbone-tunnel.client", level: .warning)
        let manager = try makeManager(self.ca)
        let listen = try parseListen(self.listen)
        let target = HBONETunnelTarget(
            source: try SPIFFEID(parsing: self.identity), nextHop: try parseAddress(self.connect),
            expectedIdentities: try self.expect.map { try SPIFFEID(parsing: $0) },
            authority: try parseAddress(self.authority)
        )
        var configuration = HBONEConfiguration()
        configuration.splicesData = !self.noSplice
        if self.poolOff {
            configuration.http2.clientMaximumStreamsPerConnection = 1
            configuration.poolIdleTimeout = .zero
        }
        let client = HBONEClient(certificates: manager, configuration: configuration, logger: logger)
        let forwarder = HBONEForwarder(host: listen.host, port: listen.port, client: client, target: target, logger: logger)
        try await runServices([manager, forwarder], port: { try await forwarder.listeningPort }, logger: logger)
    }
}
