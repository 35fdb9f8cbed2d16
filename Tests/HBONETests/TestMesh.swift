import InternetAddress
import HBONE
import MeshIdentity
import MeshTestSupport

/// A server forwarding every tunnel to `upstreamPort`, and a client, sharing one CA.
final class TestMesh: Sendable {
    let ca: CertificateAuthority
    let manager: CertificateManager
    let server: HBONEServer
    let client: HBONEClient
    let serverIdentity = spiffe("default", "httpbin")
    let clientIdentity = spiffe("default", "sleep")

    init(
        upstreamPort: Int, configuration: HBONEConfiguration = HBONEConfiguration(),
        manager: CertificateManager.Configuration = .init(), backdate: Duration = .seconds(120)
    ) throws {
        var caConfiguration = CertificateAuthority.Configuration()
        caConfiguration.backdate = backdate
        self.ca = try CertificateAuthority.selfSigned(configuration: caConfiguration)
        self.manager = CertificateManager(provider: EmbeddedCAProvider(authority: self.ca), configuration: manager)
        var serverConfiguration = HBONEServer.Configuration()
        serverConfiguration.host = "127.0.0.1"
        serverConfiguration.port = 0
        serverConfiguration.hbone = configuration
        self.server = HBONEServer(configuration: serverConfiguration, identity: self.serverIdentity, certificates: self.manager) { _ in
            .forward(to: HBONEAddress(ip: .v4(127, 0, 0, 1), port: UInt16(upstreamPort)))
        }
        self.client = HBONEClient(certificates: self.manager, configuration: configuration)
    }

    func target(port: UInt16, expecting: [SPIFFEID]? = nil) -> HBONETunnelTarget {
        HBONETunnelTarget(
            source: self.clientIdentity, nextHop: HBONEAddress(ip: .v4(127, 0, 0, 1), port: port),
            expectedIdentities: expecting ?? [self.serverIdentity], authority: HBONEAddress(ip: .v4(127, 0, 0, 1), port: 8080)
        )
    }

    /// Runs a forwarder (plain TCP in, a tunnel to the server on `serverPort` per
    /// connection) while `body` runs; `body` gets the forwarder's local port.
    func withForwarder(serverPort: UInt16, _ body: (Int) async throws -> Void) async throws {
        let forwarder = HBONEForwarder(port: 0, client: self.client, target: self.target(port: serverPort))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await forwarder.run() }
            defer { group.cancelAll() }
            try await body(try await forwarder.listeningPort)
        }
    }

    func run(_ body: (UInt16) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.manager.run() }
            group.addTask { try await self.server.run() }
            defer { group.cancelAll() }
            try await body(try await self.server.listeningAddress.port)
        }
    }
}
