public import X509
internal import Crypto
internal import SwiftASN1
internal import _CryptoExtras

/// A fresh key pair and the CSR that asks a CA to certify it for one identity.
///
/// Built the way ztunnel builds its requests (`src/tls/csr.rs`): a new ECDSA P-256
/// key per request, SHA-256 signature, an **empty subject** and a single
/// **critical URI SAN** carrying the SPIFFE ID, no other extensions.
public struct IdentityCSR: Sendable {
    /// The identity the CSR asks for.
    public let identity: SPIFFEID
    /// The private key; it never leaves the process.
    public let privateKey: Certificate.PrivateKey
    /// The signed request.
    public let request: CertificateSigningRequest

    /// Generates a fresh P-256 key and the CSR for `identity`.
    public init(identity: SPIFFEID) throws(IdentityError) {
        try self.init(identity: identity, privateKey: Certificate.PrivateKey(P256.Signing.PrivateKey()))
    }

    /// Builds the CSR for `identity` with an existing key (tests, benchmarks, key reuse).
    public init(identity: SPIFFEID, privateKey: Certificate.PrivateKey) throws(IdentityError) {
        self.identity = identity
        self.privateKey = privateKey
        do {
            let extensions = try Certificate.Extensions {
                Critical(SubjectAlternativeNames([.uniformResourceIdentifier(identity.uri)]))
            }
            let attributes = CertificateSigningRequest.Attributes([
                try CertificateSigningRequest.Attribute(ExtensionRequest(extensions: extensions))
            ])
            self.request = try CertificateSigningRequest(
                version: .v1,
                subject: DistinguishedName(),
                privateKey: privateKey,
                attributes: attributes
            )
        } catch {
            throw IdentityError.unsupportedKey("cannot sign a CSR with \(privateKey): \(error)")
        }
    }

    /// The CSR as PEM (`CERTIFICATE REQUEST`), as sent to istiod's `CreateCertificate`.
    public var pem: String { PEM.encode(self.request) }
}

/// The key types this project accepts in CSRs and CA material.
enum KeyPolicy {
    /// Checks `key`: ECDSA P-256 or P-384, or RSA with at least 2048 bits.
    static func check(_ key: Certificate.PublicKey) throws(IdentityError) {
        if P256.Signing.PublicKey(key) != nil || P384.Signing.PublicKey(key) != nil { return }
        if let rsa = _RSA.Signing.PublicKey(key) {
            if rsa.keySizeInBits >= 2048 { return }
            throw IdentityError.unsupportedKey("RSA-\(rsa.keySizeInBits)")
        }
        throw IdentityError.unsupportedKey("\(key)")
    }
}
