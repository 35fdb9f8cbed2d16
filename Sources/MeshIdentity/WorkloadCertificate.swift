public import X509
public import Foundation

/// A workload's key and certificate chain as issued for one identity.
///
/// The chain is split the way Istio clients split `CreateCertificate`'s response:
/// the first element is the leaf, trailing self-issued certificates are the trust
/// anchors, everything between is an intermediate.
public struct WorkloadCertificate: Sendable, Hashable {
    /// The identity in the leaf's URI SAN.
    public let identity: SPIFFEID
    /// The private key that matches the leaf.
    public let privateKey: Certificate.PrivateKey
    /// The leaf certificate.
    public let leaf: Certificate
    /// Intermediates from the leaf's issuer towards the root, excluding roots.
    public let intermediates: [Certificate]
    /// The trust anchors that came with the chain.
    public let roots: [Certificate]

    /// Builds the value from a CA response (leaf first, root last), checking that the leaf
    /// carries exactly `identity` and matches `privateKey` (ztunnel rejects a response whose
    /// leaf identity differs from the one requested).
    public init(identity: SPIFFEID, privateKey: Certificate.PrivateKey, chain: [Certificate]) throws(IdentityError) {
        guard let leaf = chain.first else {
            throw IdentityError.providerFailed("the CA returned an empty certificate chain")
        }
        let leafIdentity = try SPIFFEVerification.identity(of: leaf)
        guard leafIdentity == identity else {
            throw IdentityError.unexpectedIdentity(actual: leafIdentity, expected: [identity])
        }
        guard leaf.publicKey == privateKey.publicKey else {
            throw IdentityError.providerFailed("the issued certificate does not match the requested key")
        }
        var rest = Array(chain.dropFirst())
        var roots: [Certificate] = []
        while let last = rest.last, last.issuer == last.subject {
            roots.insert(rest.removeLast(), at: 0)
        }
        self.identity = identity
        self.privateKey = privateKey
        self.leaf = leaf
        self.intermediates = rest
        self.roots = roots
    }

    /// When the leaf becomes valid.
    public var notValidBefore: Date { self.leaf.notValidBefore }
    /// When the leaf expires.
    public var notValidAfter: Date { self.leaf.notValidAfter }

    /// When a rotation is due: `notBefore + fraction × lifetime` (ztunnel's `refresh_at`
    /// uses half the lifetime; with a 2-minute back-dated 24 h certificate that is
    /// about 11 h 59 m after issuance).
    public func refreshTime(fraction: Double = 0.5) -> Date {
        let lifetime = self.notValidAfter.timeIntervalSince(self.notValidBefore)
        return self.notValidBefore + lifetime * fraction
    }

    /// `true` if the leaf is valid at `date`.
    public func isValid(at date: Date) -> Bool {
        self.notValidBefore <= date && date < self.notValidAfter
    }

    /// Leaf and intermediates, the chain a TLS endpoint presents.
    public var presentedChain: [Certificate] { [self.leaf] + self.intermediates }

    /// The presented chain as PEM.
    public var certificateChainPEM: String { PEM.encode(self.presentedChain) }

    /// The roots as PEM.
    public var rootsPEM: String { PEM.encode(self.roots) }

    /// The private key as PKCS#8 PEM.
    public var privateKeyPEM: String {
        get throws(IdentityError) { try PEM.encode(self.privateKey) }
    }
}
