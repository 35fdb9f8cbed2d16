import Foundation
@testable import HBONE
import MeshIdentity
import MeshTestSupport
import Testing
import X509

/// The verified-chain cache: a hit needs the same bytes, roots, usage and trust domain and
/// a time inside every certificate's validity; nothing else is ever answered from it.
@Suite("Verified peer-chain cache")
struct VerifiedChainCacheTests {
    let ca: CertificateAuthority
    let other: CertificateAuthority
    let now = Date()

    init() throws {
        self.ca = try CertificateAuthority.selfSigned(now: self.now)
        self.other = try CertificateAuthority.selfSigned(now: self.now)
    }

    func chain(_ authority: CertificateAuthority, _ identity: SPIFFEID, lifetime: Duration = .seconds(3600)) throws -> [Certificate] {
        let csr = try IdentityCSR(identity: identity)
        return try authority.sign(csr.request, for: identity, lifetime: lifetime, now: self.now)
    }

    static func der(_ chain: [Certificate]) -> [[UInt8]] {
        chain.map { PEM.der($0) }
    }

    @Test("a verified chain is answered until its leaf expires; other bytes, roots, usage or trust domain miss")
    func hitsAndMisses() async throws {
        let cache = VerifiedChainCache()
        let identity = spiffe("default", "sleep")
        let presented = Array(try self.chain(self.ca, identity).dropLast())
        let bytes = Self.der(presented)
        let bundle = TrustBundle(roots: self.ca.roots)
        let domain = identity.trustDomain
        #expect(cache.identity(chain: bytes, bundle: bundle, usage: .client, trustDomain: domain, at: self.now) == nil)

        let verified = try await bundle.verify(chain: presented, usage: .client, trustDomain: domain, at: self.now)
        cache.insert(chain: bytes, certificates: presented, bundle: bundle, usage: .client, trustDomain: domain, identity: verified, now: self.now)
        #expect(cache.identity(chain: bytes, bundle: bundle, usage: .client, trustDomain: domain, at: self.now + 60) == identity)

        // Time: past the leaf's notAfter, or before its notBefore.
        #expect(cache.identity(chain: bytes, bundle: bundle, usage: .client, trustDomain: domain, at: presented[0].notValidAfter) == nil)
        #expect(cache.identity(chain: bytes, bundle: bundle, usage: .client, trustDomain: domain, at: presented[0].notValidBefore - 1) == nil)
        // Another trust anchor set (a root rotation), usage or trust domain.
        #expect(cache.identity(chain: bytes, bundle: TrustBundle(roots: self.other.roots), usage: .client, trustDomain: domain, at: self.now) == nil)
        #expect(cache.identity(chain: bytes, bundle: bundle, usage: .server, trustDomain: domain, at: self.now) == nil)
        #expect(cache.identity(chain: bytes, bundle: bundle, usage: .client, trustDomain: try TrustDomain("example.org"), at: self.now) == nil)
        // A different certificate for the same identity (a rotation) is not the same chain.
        let rotated = Self.der(Array(try self.chain(self.ca, identity).dropLast()))
        #expect(cache.identity(chain: rotated, bundle: bundle, usage: .client, trustDomain: domain, at: self.now) == nil)
        // One flipped byte in the signature.
        var tampered = bytes
        tampered[0][tampered[0].count - 1] ^= 0x01
        #expect(cache.identity(chain: tampered, bundle: bundle, usage: .client, trustDomain: domain, at: self.now) == nil)
    }

    @Test("bounded: a full cache drops what expired, then everything, before it grows past its capacity")
    func bounded() async throws {
        let cache = VerifiedChainCache(capacity: 4)
        let bundle = TrustBundle(roots: self.ca.roots)
        var chains: [[[UInt8]]] = []
        for index in 0..<9 {
            let identity = spiffe("default", "sa-\(index)")
            let presented = Array(try self.chain(self.ca, identity).dropLast())
            let bytes = Self.der(presented)
            chains.append(bytes)
            cache.insert(chain: bytes, certificates: presented, bundle: bundle, usage: .client, trustDomain: identity.trustDomain, identity: identity, now: self.now)
            #expect(cache.count <= 4)
        }
        #expect(cache.identity(chain: chains[8], bundle: bundle, usage: .client, trustDomain: spiffe("default", "sa-8").trustDomain, at: self.now) == spiffe("default", "sa-8"))
    }
}
