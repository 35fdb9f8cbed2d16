import ArgumentParser
import Foundation
import MeshIdentity
import X509

/// A short tour of the identity module: an embedded CA issues SPIFFE certificates,
/// they verify against the trust bundle, a foreign CA's do not, and the certificate
/// manager rotates one.
@main
struct IdentityDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity-demo",
        abstract: "Issue, verify and rotate SPIFFE workload certificates with the embedded CA."
    )

    @Option(help: "Trust domain of the mesh.")
    var trustDomain = "cluster.local"

    @Option(help: "Write the CA (cacerts layout) and the issued certificates here.")
    var output: String?

    @Option(help: "Workload certificate lifetime in seconds (short, to watch rotation).")
    var lifetime = 10

    func run() async throws {
        var configuration = CertificateAuthority.Configuration()
        configuration.trustDomain = try TrustDomain(self.trustDomain)
        configuration.backdate = .seconds(1)
        let ca = try CertificateAuthority.selfSigned(configuration: configuration)
        print("root CA      \(ca.signingCertificate.subject)  valid until \(ca.signingCertificate.notValidAfter)")

        let identities = try [("default", "sleep"), ("default", "httpbin"), ("other", "curl")].map {
            try SPIFFEID(trustDomain: configuration.trustDomain, namespace: $0.0, serviceAccount: $0.1)
        }
        var managerConfiguration = CertificateManager.Configuration()
        managerConfiguration.certificateLifetime = .seconds(self.lifetime)
        let manager = CertificateManager(
            provider: EmbeddedCAProvider(authority: ca), configuration: managerConfiguration
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await manager.run() }

            for identity in identities {
                let certificate = try await manager.certificate(for: identity)
                let verified = try await ca.trustBundle.verify(
                    chain: certificate.presentedChain, usage: .client,
                    trustDomain: configuration.trustDomain, at: Date()
                )
                print("issued       \(identity.uri)")
                print("             serial \(certificate.leaf.serialNumber)  expires \(certificate.notValidAfter)")
                print("             verified as \(verified.principal) (clientAuth, serverAuth)")
                if let output {
                    let directory = URL(fileURLWithPath: output)
                    try ca.write(to: directory.appendingPathComponent("cacerts"))
                    let base = directory.appendingPathComponent("\(identity.namespace)-\(identity.serviceAccount)")
                    try certificate.certificateChainPEM.write(to: base.appendingPathExtension("pem"), atomically: true, encoding: .utf8)
                    try certificate.privateKeyPEM.write(to: base.appendingPathExtension("key"), atomically: true, encoding: .utf8)
                }
            }

            let foreign = try CertificateAuthority.selfSigned()
            let stranger = try await EmbeddedCAProvider(authority: foreign).signCertificate(
                IdentityCSR(identity: identities[0]), lifetime: .seconds(3600)
            )
            do {
                _ = try await ca.trustBundle.verify(chain: stranger, usage: .client, trustDomain: nil, at: Date())
                print("UNEXPECTED   a certificate from a foreign root verified")
            } catch {
                print("rejected     same identity from a foreign root: \(error)")
            }

            let first = try await manager.certificate(for: identities[0])
            var updates = await manager.updates(for: identities[0]).makeAsyncIterator()
            print("waiting      for rotation of \(identities[0].uri) at half-life (\(first.refreshTime()))")
            if let rotated = await updates.next() {
                print("rotated      serial \(first.leaf.serialNumber) -> \(rotated.leaf.serialNumber)")
            }
            group.cancelAll()
        }
    }
}
