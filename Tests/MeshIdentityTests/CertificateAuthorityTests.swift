import Foundation
import MeshIdentity
import MeshTestSupport
import Testing
import X509
import Crypto

@Suite("Embedded CA")
struct CertificateAuthorityTests {
    let ca: CertificateAuthority
    let now = Date()

    init() throws {
        self.ca = try CertificateAuthority.selfSigned()
    }

    func issue(_ identity: SPIFFEID, lifetime: Duration? = nil) throws -> (IdentityCSR, [Certificate]) {
        let csr = try IdentityCSR(identity: identity)
        return (csr, try self.ca.sign(csr.request, for: identity, lifetime: lifetime, now: self.now))
    }

    @Test("issues istiod's leaf profile, chain leaf first and root last")
    func profile() throws {
        let identity = spiffe("default", "sleep")
        let (csr, chain) = try self.issue(identity)
        #expect(chain.count == 2)
        #expect(chain.last == self.ca.roots.first)
        let leaf = chain[0]
        #expect(leaf.subject == DistinguishedName())
        #expect(leaf.publicKey == csr.privateKey.publicKey)
        #expect(abs(leaf.notValidBefore.timeIntervalSince(self.now) + 120) <= 1, "NotBefore back-dated 2 minutes")
        #expect(abs(leaf.notValidAfter.timeIntervalSince(self.now) - 24 * 3600) <= 1, "24 h default lifetime")
        #expect(leaf.serialNumber.bytes.count >= 15 && leaf.serialNumber.bytes.count <= 17, "random 128-bit serial")
        let san = try #require(try leaf.extensions.subjectAlternativeNames)
        #expect(Array(san) == [.uniformResourceIdentifier(identity.uri)])
        #expect(leaf.extensions.first { $0.oid == .X509ExtensionID.subjectAlternativeName }?.critical == true)
        #expect(try leaf.extensions.keyUsage == KeyUsage(digitalSignature: true, keyEncipherment: true))
        #expect(try leaf.extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth, .clientAuth]))
        #expect(try leaf.extensions.basicConstraints == .notCertificateAuthority)
    }

    @Test("serials differ between issuances")
    func serialsAreRandom() throws {
        let serials = try (0..<20).map { _ in try self.issue(spiffe("a", "b")).1[0].serialNumber }
        #expect(Set(serials).count == 20)
    }

    @Test("openssl verifies issued certificates for client and server use, and shows the profile")
    func opensslVerifies() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let directory = try TemporaryDirectory()
        let identity = spiffe("default", "httpbin")
        let (_, chain) = try self.issue(identity)
        let leafPath = try directory.write("leaf.pem", PEM.encode(chain[0]))
        let rootPath = try directory.write("root.pem", self.ca.trustBundle.pem)
        for purpose in ["sslclient", "sslserver"] {
            let result = try await ExternalTool.run(["openssl", "verify", "-purpose", purpose, "-CAfile", rootPath, leafPath])
            #expect(result.status == 0, "\(purpose): \(result.combined)")
            #expect(result.standardOutput.contains("\(leafPath): OK"))
        }
        let text = try OpenSSLCA.check(await ExternalTool.run(["openssl", "x509", "-in", leafPath, "-noout", "-text"])).standardOutput
        #expect(text.contains("Subject: \n") || text.contains("Subject:\n"), "empty subject:\n\(text)")
        #expect(text.contains("X509v3 Subject Alternative Name: critical\n                URI:\(identity.uri)"))
        #expect(text.contains("X509v3 Key Usage: critical\n                Digital Signature, Key Encipherment"))
        #expect(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"))
        #expect(text.contains("CA:FALSE"))
        #expect(text.contains("ASN1 OID: prime256v1"))
        #expect(text.contains("Signature Algorithm: ecdsa-with-SHA256"))
    }

    @Test("openssl verifies a chain through an intermediate CA")
    func intermediateChain() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let intermediate = try self.ca.issueIntermediate(organization: "cluster.local intermediate")
        let csr = try IdentityCSR(identity: spiffe("ns1", "sa1"))
        let chain = try intermediate.sign(csr.request, for: csr.identity)
        #expect(chain.count == 3)
        let directory = try TemporaryDirectory()
        let leaf = try directory.write("leaf.pem", PEM.encode(chain[0]))
        let untrusted = try directory.write("chain.pem", PEM.encode(Array(chain[1..<2])))
        let root = try directory.write("root.pem", self.ca.trustBundle.pem)
        let result = try await ExternalTool.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", root, "-untrusted", untrusted, leaf])
        #expect(result.status == 0, "\(result.combined)")
        let identity = try await self.ca.trustBundle.verify(chain: chain, usage: .server, trustDomain: .clusterLocal, at: Date())
        #expect(identity == csr.identity)
        // Without the intermediate there is no path.
        await #expect(throws: IdentityError.self) {
            _ = try await self.ca.trustBundle.verify(chain: [chain[0]], usage: .server, trustDomain: nil, at: Date())
        }
    }

    @Test("ignores the CSR's subject and SANs: issues for the authenticated identity")
    func ignoresRequestedNames() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let directory = try TemporaryDirectory()
        let pem = try await OpenSSLCA.makeCSR(
            keySpec: "ec:P-256", subject: "/CN=admin",
            extensions: ["subjectAltName=URI:spiffe://cluster.local/ns/istio-system/sa/istiod,DNS:evil.example"],
            in: directory
        )
        let identity = spiffe("default", "sleep")
        let chain = try self.ca.sign(csrPEM: pem, for: identity)
        #expect(chain[0].subject == DistinguishedName())
        #expect(Array(try #require(try chain[0].extensions.subjectAlternativeNames)) == [.uniformResourceIdentifier(identity.uri)])
    }

    @Test("accepts openssl CSRs with P-256, P-384 and RSA-2048 keys", arguments: ["ec:P-256", "ec:P-384", "rsa:2048"])
    func acceptsKeys(keySpec: String) async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let directory = try TemporaryDirectory()
        let pem = try await OpenSSLCA.makeCSR(keySpec: keySpec, in: directory)
        let chain = try self.ca.sign(csrPEM: pem, for: spiffe("a", "b"))
        #expect(chain.count == 2)
    }

    @Test("rejects weak and unsupported keys", arguments: ["rsa:1024", "ed25519", "ec:P-521"])
    func rejectsKeys(keySpec: String) async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let directory = try TemporaryDirectory()
        let pem = try await OpenSSLCA.makeCSR(keySpec: keySpec, in: directory)
        #expect {
            try self.ca.sign(csrPEM: pem, for: spiffe("a", "b"))
        } throws: { error in
            guard case IdentityError.unsupportedKey(let key) = error else { return false }
            return keySpec != "rsa:1024" || key.contains("RSA")
        }
    }

    @Test("rejects a CSR whose signature does not match its contents")
    func tamperedCSR() throws {
        let csr = try IdentityCSR(identity: spiffe("default", "sleep"))
        var der = PEM.der(csr.request)
        // Change one byte of the SPIFFE URI inside the signed part: still parses, no longer verifies.
        let needle = Array("sleep".utf8)
        let index = try #require(der.indices.first { der[$0...].starts(with: needle) })
        der[index] = UInt8(ascii: "x")
        let tampered = try PEM.csr(der: der)
        #expect(throws: IdentityError.invalidCSRSignature) {
            try self.ca.sign(tampered, for: spiffe("default", "sleep"))
        }
    }

    @Test("lifetime: default when unset, maximum 90 days accepted, 91 days rejected (not clamped)")
    func lifetimes() throws {
        let identity = spiffe("a", "b")
        let (_, defaulted) = try self.issue(identity, lifetime: .zero)
        #expect(abs(defaulted[0].notValidAfter.timeIntervalSince(self.now) - 86_400) <= 1)
        let (_, ninety) = try self.issue(identity, lifetime: .seconds(90 * 86_400))
        #expect(abs(ninety[0].notValidAfter.timeIntervalSince(self.now) - 90 * 86_400) <= 1)
        #expect(throws: IdentityError.lifetimeTooLong(requestedSeconds: 91 * 86_400, maximumSeconds: 90 * 86_400)) {
            try self.issue(identity, lifetime: .seconds(91 * 86_400))
        }
    }

    @Test("refuses identities from another trust domain")
    func wrongTrustDomain() throws {
        let identity = spiffe("a", "b", trustDomain: "other.mesh")
        #expect(throws: IdentityError.wrongTrustDomain(expected: .clusterLocal, actual: identity.trustDomain)) {
            try self.issue(identity)
        }
    }

    @Test("rejects garbage PEM and DER with typed errors")
    func garbage() {
        #expect(throws: IdentityError.self) { try self.ca.sign(csrPEM: "hello", for: spiffe("a", "b")) }
        #expect {
            try PEM.csr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
        } throws: { error in
            if case IdentityError.malformedPEM(let expected, _) = error { return expected == "CERTIFICATE REQUEST" }
            return false
        }
        #expect(throws: IdentityError.self) { try PEM.certificates("") }
        #expect(throws: IdentityError.self) { try PEM.certificate(der: [0x30, 0x03, 0x02, 0x01]) }
    }

    @Test("loads a plugged-in CA made by openssl (cacerts layout) and signs with it")
    func pluggedCA() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let external = try await OpenSSLCA(subject: "/O=cluster.local")
        let directory = try TemporaryDirectory()
        try directory.write("ca-cert.pem", external.rootPEM)
        try directory.write("ca-key.pem", try String(contentsOfFile: external.path("root.key"), encoding: .utf8))
        try directory.write("cert-chain.pem", "")
        try directory.write("root-cert.pem", external.rootPEM)
        let plugged = try CertificateAuthority(directory: directory.url)
        let csr = try IdentityCSR(identity: spiffe("default", "sleep"))
        let chain = try plugged.sign(csr.request, for: csr.identity)
        #expect(chain.count == 2)
        let leaf = try directory.write("leaf.pem", PEM.encode(chain[0]))
        let result = try await ExternalTool.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", external.path("root.pem"), leaf])
        #expect(result.status == 0, "\(result.combined)")

        // A round trip through our own cacerts writer loads back to the same CA.
        let written = try TemporaryDirectory()
        try plugged.write(to: written.url)
        let reloaded = try CertificateAuthority(directory: written.url)
        #expect(reloaded.signingCertificate == plugged.signingCertificate)
    }

    @Test("rejects CA material that cannot sign")
    func unusableCA() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let external = try await OpenSSLCA()
        let leafPEM = try await external.issueLeaf(name: "leaf", extensions: ["basicConstraints=CA:FALSE"])
        let leafKey = try String(contentsOfFile: external.path("leaf.key"), encoding: .utf8)
        let rootKey = try String(contentsOfFile: external.path("root.key"), encoding: .utf8)
        #expect {
            try CertificateAuthority(signingCertificatePEM: leafPEM, signingKeyPEM: leafKey, certificateChainPEM: "", rootCertificatesPEM: external.rootPEM)
        } throws: { error in
            if case IdentityError.unusableCA(let detail) = error { return detail.contains("not a CA") }
            return false
        }
        #expect {
            try CertificateAuthority(signingCertificatePEM: external.rootPEM, signingKeyPEM: leafKey, certificateChainPEM: "", rootCertificatesPEM: external.rootPEM)
        } throws: { error in
            if case IdentityError.unusableCA(let detail) = error { return detail.contains("does not match") }
            return false
        }
        #expect(throws: Never.self) {
            try CertificateAuthority(signingCertificatePEM: external.rootPEM, signingKeyPEM: rootKey, certificateChainPEM: "", rootCertificatesPEM: external.rootPEM)
        }
        #expect(throws: IdentityError.self) {
            try CertificateAuthority(directory: URL(fileURLWithPath: "/nonexistent/cacerts"))
        }
    }

    @Test("the CSR we send has an empty subject and one critical URI SAN, and openssl verifies its signature")
    func csrProfile() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let csr = try IdentityCSR(identity: spiffe("default", "sleep"))
        let directory = try TemporaryDirectory()
        let path = try directory.write("req.pem", csr.pem)
        let result = try OpenSSLCA.check(await ExternalTool.run(["openssl", "req", "-in", path, "-noout", "-text", "-verify"]))
        #expect(result.combined.contains("verify OK") || result.combined.contains("Certificate request self-signature verify OK"))
        #expect(result.standardOutput.contains("Subject: \n") || result.standardOutput.contains("Subject:\n"))
        #expect(result.standardOutput.contains("X509v3 Subject Alternative Name: critical\n                    URI:spiffe://cluster.local/ns/default/sa/sleep"))
        #expect(result.standardOutput.contains("NIST CURVE: P-256"))
        // PEM and DER round trips.
        #expect(try PEM.csr(csr.pem) == csr.request)
        #expect(try PEM.csr(der: PEM.der(csr.request)) == csr.request)
        let keyPEM = try PEM.encode(csr.privateKey)
        #expect(keyPEM.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(try PEM.privateKey(keyPEM) == csr.privateKey)
    }
}
