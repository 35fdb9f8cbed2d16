import Foundation
import MeshIdentity
import MeshTestSupport
import Testing
import X509

@Suite("Trust bundle verification")
struct TrustBundleTests {
    let ca: CertificateAuthority
    let chain: [Certificate]
    let identity = spiffe("default", "sleep")
    let now = Date()

    init() throws {
        self.ca = try CertificateAuthority.selfSigned()
        self.chain = try self.ca.sign(IdentityCSR(identity: self.identity).request, for: self.identity, now: self.now)
    }

    @Test("a valid chain yields the peer's identity for both usages")
    func valid() async throws {
        for usage in [TrustBundle.Usage.client, .server] {
            let verified = try await self.ca.trustBundle.verify(chain: self.chain, usage: usage, trustDomain: .clusterLocal, at: self.now)
            #expect(verified == self.identity)
        }
        // The leaf alone is enough when the root is in the bundle.
        let leafOnly = try await self.ca.trustBundle.verify(chain: [self.chain[0]], usage: .client, trustDomain: nil, at: self.now)
        #expect(leafOnly == self.identity)
    }

    @Test("expired and not-yet-valid chains are rejected with their dates")
    func validityWindow() async throws {
        let leaf = self.chain[0]
        await #expect(throws: IdentityError.certificateExpired(subject: self.identity.uri, notValidAfter: leaf.notValidAfter)) {
            _ = try await self.ca.trustBundle.verify(chain: self.chain, usage: .client, trustDomain: nil, at: leaf.notValidAfter)
        }
        await #expect(throws: IdentityError.certificateNotYetValid(subject: self.identity.uri, notValidBefore: leaf.notValidBefore)) {
            _ = try await self.ca.trustBundle.verify(chain: self.chain, usage: .client, trustDomain: nil, at: leaf.notValidBefore - 1)
        }
    }

    @Test("a chain to a foreign root is untrusted, even with the same identity")
    func foreignRoot() async throws {
        let foreign = try CertificateAuthority.selfSigned()
        let stranger = try foreign.sign(IdentityCSR(identity: self.identity).request, for: self.identity)
        await #expect {
            _ = try await self.ca.trustBundle.verify(chain: stranger, usage: .client, trustDomain: nil, at: Date())
        } throws: { error in
            if case IdentityError.untrustedChain = error { return true }
            return false
        }
        // Trusting both roots (root rotation) accepts it.
        let merged = self.ca.trustBundle.merging(foreign.trustBundle)
        #expect(merged.roots.count == 2)
        #expect(try await merged.verify(chain: stranger, usage: .client, trustDomain: nil, at: Date()) == self.identity)
    }

    @Test("an identity from another trust domain is rejected")
    func wrongTrustDomain() async throws {
        var configuration = CertificateAuthority.Configuration()
        configuration.trustDomain = try TrustDomain("other.mesh")
        let other = try CertificateAuthority.selfSigned(configuration: configuration)
        let id = spiffe("default", "sleep", trustDomain: "other.mesh")
        let chain = try other.sign(IdentityCSR(identity: id).request, for: id)
        await #expect(throws: IdentityError.wrongTrustDomain(expected: .clusterLocal, actual: id.trustDomain)) {
            _ = try await other.trustBundle.verify(chain: chain, usage: .client, trustDomain: .clusterLocal, at: Date())
        }
    }

    @Test("certificates from openssl: EKU, missing and multiple SANs, non-SPIFFE URI")
    func opensslLeaves() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is not installed")
        let external = try await OpenSSLCA()
        let bundle = try TrustBundle(pem: external.rootPEM)
        let uri = "URI:spiffe://cluster.local/ns/default/sa/sleep"
        let serverOnly = try PEM.certificate(await external.issueLeaf(name: "server", extensions: [
            "subjectAltName=critical,\(uri)", "extendedKeyUsage=serverAuth", "basicConstraints=CA:FALSE",
        ]))
        #expect(try await bundle.verify(chain: [serverOnly], usage: .server, trustDomain: .clusterLocal, at: Date()) == self.identity)
        await #expect(throws: IdentityError.missingExtendedKeyUsage("clientAuth")) {
            _ = try await bundle.verify(chain: [serverOnly], usage: .client, trustDomain: nil, at: Date())
        }
        let noSAN = try PEM.certificate(await external.issueLeaf(name: "nosan", extensions: ["extendedKeyUsage=clientAuth"]))
        await #expect(throws: IdentityError.missingSPIFFEID) {
            _ = try await bundle.verify(chain: [noSAN], usage: .client, trustDomain: nil, at: Date())
        }
        let twoURIs = try PEM.certificate(await external.issueLeaf(name: "two", extensions: [
            "subjectAltName=critical,\(uri),URI:spiffe://cluster.local/ns/x/sa/y", "extendedKeyUsage=clientAuth",
        ]))
        await #expect(throws: IdentityError.multipleURISANs(count: 2)) {
            _ = try await bundle.verify(chain: [twoURIs], usage: .client, trustDomain: nil, at: Date())
        }
        let badURI = try PEM.certificate(await external.issueLeaf(name: "bad", extensions: [
            "subjectAltName=URI:spiffe://cluster.local/ns/x", "extendedKeyUsage=clientAuth",
        ]))
        await #expect {
            _ = try await bundle.verify(chain: [badURI], usage: .client, trustDomain: nil, at: Date())
        } throws: { error in
            if case IdentityError.invalidSPIFFEID(let inner) = error { return inner.reason == .missingSegments }
            return false
        }
    }

    @Test("an empty chain is rejected")
    func emptyChain() async {
        await #expect(throws: IdentityError.self) {
            _ = try await self.ca.trustBundle.verify(chain: [], usage: .client, trustDomain: nil, at: Date())
        }
    }

    @Test("WorkloadCertificate splits the CA response and refuses a leaf for another identity")
    func workloadCertificate() throws {
        let csr = try IdentityCSR(identity: self.identity)
        let intermediate = try self.ca.issueIntermediate(organization: "intermediate")
        let chain = try intermediate.sign(csr.request, for: self.identity)
        let certificate = try WorkloadCertificate(identity: self.identity, privateKey: csr.privateKey, chain: chain)
        #expect(certificate.intermediates.count == 1)
        #expect(certificate.roots == self.ca.roots)
        #expect(certificate.presentedChain.count == 2)
        let lifetime = certificate.notValidAfter.timeIntervalSince(certificate.notValidBefore)
        #expect(certificate.refreshTime() == certificate.notValidBefore + lifetime / 2)
        #expect(throws: IdentityError.unexpectedIdentity(actual: self.identity, expected: [spiffe("x", "y")])) {
            try WorkloadCertificate(identity: spiffe("x", "y"), privateKey: csr.privateKey, chain: chain)
        }
        let otherKey = try IdentityCSR(identity: self.identity).privateKey
        #expect(throws: IdentityError.self) {
            try WorkloadCertificate(identity: self.identity, privateKey: otherKey, chain: chain)
        }
    }
}
