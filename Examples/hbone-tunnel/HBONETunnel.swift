import ArgumentParser
import Foundation
import HBONE
import IstioCA
import Logging
import MeshIdentity
import ServiceLifecycle

/// `hbone-tunnel`: the two ends of an HBONE tunnel as separate processes, for interop with
/// other HBONE implementations and for the end-to-end benchmarks.
///
/// ```
/// hbone-tunnel ca     --dir ca/                                   # a mesh CA (cacerts layout)
/// hbone-tunnel issue  --dir ca/ --identity spiffe://cluster.local/ns/default/sa/sleep --out sleep
/// hbone-tunnel ca-server --dir ca/ --port 15012 --tokens tokens.txt  # istiod's CA endpoint
/// hbone-tunnel server --dir ca/ --listen 127.0.0.1:15008 --upstream 127.0.0.1:8080
/// hbone-tunnel client --dir ca/ --listen 127.0.0.1:15001 --connect 127.0.0.1:15008 \
///                     --authority 127.0.0.1:8080 --expect spiffe://cluster.local/ns/default/sa/httpbin
/// ```
/// `server` and `client` print `listening <port>` on stdout once bound and stop on
/// SIGINT/SIGTERM (graceful: GOAWAY and drain on the server).
@main
struct HBONETunnelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hbone-tunnel",
        abstract: "Run one end of an HBONE (mTLS HTTP/2 CONNECT) tunnel.",
        subcommands: [MakeCA.self, Issue.self, CAServer.self, Server.self, Client.self]
    )
}

/// Options every subcommand that needs the mesh CA shares.
struct CAOptions: ParsableArguments {
    @Option(help: "Directory of the mesh CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).")
    var dir: String

    @Option(help: "Trust domain of the mesh.")
    var trustDomain = "cluster.local"

    func load() throws -> CertificateAuthority {
        var configuration = CertificateAuthority.Configuration()
        configuration.trustDomain = try TrustDomain(self.trustDomain)
        return try CertificateAuthority(directory: URL(fileURLWithPath: self.dir), configuration: configuration)
    }
}

struct MakeCA: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ca", abstract: "Create a self-signed mesh CA.")

    @Option(help: "Directory to write the CA to (created if missing).")
    var dir: String

    @Option(help: "Trust domain of the mesh.")
    var trustDomain = "cluster.local"

    func run() throws {
        var configuration = CertificateAuthority.Configuration()
        configuration.trustDomain = try TrustDomain(self.trustDomain)
        let ca = try CertificateAuthority.selfSigned(configuration: configuration)
        let url = URL(fileURLWithPath: self.dir)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        try ca.write(to: url)
        print(url.path)
    }
}

struct Issue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Issue a workload certificate: writes <out>.pem (leaf and intermediates), <out>.key and <out>-root.pem."
    )

    @OptionGroup var ca: CAOptions

    @Option(help: "The SPIFFE identity to issue for.")
    var identity: String

    @Option(help: "Lifetime in seconds.")
    var lifetime = 24 * 3600

    @Option(help: "Output path prefix.")
    var out: String

    func run() throws {
        let authority = try self.ca.load()
        let identity = try SPIFFEID(parsing: self.identity)
        let csr = try IdentityCSR(identity: identity)
        let chain = try authority.sign(csr.request, for: identity, lifetime: .seconds(self.lifetime))
        let certificate = try WorkloadCertificate(identity: identity, privateKey: csr.privateKey, chain: chain)
        try Data(certificate.certificateChainPEM.utf8).write(to: URL(fileURLWithPath: "\(self.out).pem"))
        try Data(certificate.privateKeyPEM.utf8).write(to: URL(fileURLWithPath: "\(self.out).key"))
        try Data(certificate.rootsPEM.utf8).write(to: URL(fileURLWithPath: "\(self.out)-root.pem"))
        print("\(self.out).pem")
    }
}

struct CAServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca-server",
        abstract: "Serve the CA as istiod does: gRPC IstioCertificateService/CreateCertificate over TLS + HTTP/2.",
        discussion: "The tokens file has one '<token> <spiffe-id>' per line: a caller presenting 'authorization: Bearer <token>' is that identity. Prints 'listening <port>' once bound."
    )

    @OptionGroup var ca: CAOptions
    @Option(help: "Listening address.")
    var host = "0.0.0.0"
    @Option(help: "Listening port (istiod: 15012; 0 picks one).")
    var port = 15012
    @Option(help: "The tokens file.")
    var tokens: String
    @Option(help: "namespace/serviceaccount of callers that may impersonate (CA_TRUSTED_NODE_ACCOUNTS), comma-separated.")
    var trustedNodeAccounts = "istio-system/ztunnel"

    func run() async throws {
        let logger = makeLogger("hbone-tunnel.ca", level: .info)
        var configuration = IstioCAServer.Configuration()
        configuration.host = self.host
        configuration.port = self.port
        configuration.trustedNodeAccounts = Set(self.trustedNodeAccounts.split(separator: ",").map(String.init))
        for (number, line) in try String(contentsOfFile: self.tokens, encoding: .utf8).split(separator: "\n").enumerated() {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard !parts.isEmpty, !parts[0].hasPrefix("#") else { continue }
            guard parts.count == 2 else { throw ValidationError("\(self.tokens):\(number + 1): expected '<token> <spiffe-id>'") }
            configuration.tokens[String(parts[0])] = try SPIFFEID(parsing: String(parts[1]))
        }
        let server = try IstioCAServer(authority: try self.ca.load(), configuration: configuration, logger: logger)
        try await runServices([server], port: { try await server.port }, logger: logger)
    }
}
