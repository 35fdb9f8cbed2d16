@_spi(FixedExpiryValidationTime) public import X509
public import Foundation
internal import SwiftASN1

/// The set of root certificates a workload trusts, and verification of peer chains against it.
///
/// A peer chain is accepted when (checked in this order, each with its own ``IdentityError``):
/// 1. every certificate in it is within its validity window at the verification time;
/// 2. the leaf carries exactly one URI SAN and it is a valid SPIFFE ID
///    (SPIFFE X509-SVID §2), in the expected trust domain when one is given;
/// 3. the leaf's ExtendedKeyUsage contains the usage the connection needs
///    (serverAuth for a server, clientAuth for a client, RFC 5280 §4.2.1.12);
/// 4. a path from the leaf through the presented intermediates reaches one of the
///    roots, with every signature and the RFC 5280 basic checks passing.
public struct TrustBundle: Sendable, Hashable {
    /// What the verified certificate will be used for.
    public enum Usage: Sendable, Hashable {
        /// The peer is a TLS server: its leaf needs serverAuth.
        case server
        /// The peer is a TLS client: its leaf needs clientAuth.
        case client
    }

    /// The trust anchors.
    public let roots: [Certificate]

    /// Wraps `roots`.
    public init(roots: [Certificate]) {
        self.roots = roots
    }

    /// Parses a PEM bundle (`root-cert.pem`).
    public init(pem: String) throws(IdentityError) {
        self.roots = try PEM.certificates(pem)
    }

    /// The bundle as PEM.
    public var pem: String { PEM.encode(self.roots) }

    /// Merges two bundles (root rotation: trust both while they overlap).
    public func merging(_ other: TrustBundle) -> TrustBundle {
        TrustBundle(roots: self.roots + other.roots.filter { !self.roots.contains($0) })
    }

    /// Verifies `chain` (leaf first; intermediates may follow; a trailing root is fine)
    /// and returns the peer's SPIFFE identity.
    ///
    /// - Parameters:
    ///   - chain: The peer's presented chain.
    ///   - usage: How the peer uses the certificate.
    ///   - trustDomain: The required trust domain, or `nil` to accept any.
    ///   - time: The verification time.
    public func verify(
        chain: [Certificate],
        usage: Usage,
        trustDomain: TrustDomain?,
        at time: Date
    ) async throws(IdentityError) -> SPIFFEID {
        guard let leaf = chain.first else { throw IdentityError.untrustedChain(detail: "empty chain") }
        for certificate in chain {
            if time >= certificate.notValidAfter {
                throw IdentityError.certificateExpired(
                    subject: SPIFFEVerification.name(of: certificate), notValidAfter: certificate.notValidAfter
                )
            }
            if time < certificate.notValidBefore {
                throw IdentityError.certificateNotYetValid(
                    subject: SPIFFEVerification.name(of: certificate), notValidBefore: certificate.notValidBefore
                )
            }
        }
        let identity = try SPIFFEVerification.identity(of: leaf)
        if let trustDomain, identity.trustDomain != trustDomain {
            throw IdentityError.wrongTrustDomain(expected: trustDomain, actual: identity.trustDomain)
        }
        try SPIFFEVerification.checkUsage(of: leaf, usage)
        var verifier = Verifier(rootCertificates: CertificateStore(self.roots)) {
            RFC5280Policy(fixedExpiryValidationTime: time)
            SPIFFELeafPolicy()
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        switch result {
        case .validCertificate:
            return identity
        case .couldNotValidate(let failures):
            let reasons = failures.map { $0.policyFailureReason.description }
            throw IdentityError.untrustedChain(
                detail: reasons.isEmpty ? "no path to a trusted root" : reasons.joined(separator: "; ")
            )
        }
    }
}

/// Declares the critical SubjectAltName extension of SPIFFE leaves as handled.
///
/// RFC 5280 §4.2: a verifier must reject a certificate with a critical extension it
/// does not process. The SPIFFE ID in the SAN is processed by ``TrustBundle/verify(chain:usage:trustDomain:at:)``
/// before path building, so this policy only has to claim the extension.
struct SPIFFELeafPolicy: VerifierPolicy {
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [.X509ExtensionID.subjectAlternativeName]

    mutating func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        .meetsPolicy
    }
}

/// Reading SPIFFE identities and usages off certificates.
enum SPIFFEVerification {
    /// The single SPIFFE ID in `certificate`'s URI SANs.
    static func identity(of certificate: Certificate) throws(IdentityError) -> SPIFFEID {
        let names: SubjectAlternativeNames?
        do {
            names = try certificate.extensions.subjectAlternativeNames
        } catch {
            throw IdentityError.malformedDER(expected: "SubjectAltName", detail: "\(error)")
        }
        let uris = (names ?? SubjectAlternativeNames()).compactMap { name -> String? in
            if case .uniformResourceIdentifier(let uri) = name { return uri }
            return nil
        }
        guard let uri = uris.first else { throw IdentityError.missingSPIFFEID }
        guard uris.count == 1 else { throw IdentityError.multipleURISANs(count: uris.count) }
        do {
            return try SPIFFEID(parsing: uri)
        } catch {
            throw IdentityError.invalidSPIFFEID(error)
        }
    }

    /// Checks that `certificate` may be used as `usage`.
    static func checkUsage(of certificate: Certificate, _ usage: TrustBundle.Usage) throws(IdentityError) {
        let needed: ExtendedKeyUsage.Usage = usage == .server ? .serverAuth : .clientAuth
        let usages: ExtendedKeyUsage?
        do {
            usages = try certificate.extensions.extendedKeyUsage
        } catch {
            throw IdentityError.malformedDER(expected: "ExtendedKeyUsage", detail: "\(error)")
        }
        guard let usages, usages.contains(needed) else {
            throw IdentityError.missingExtendedKeyUsage(usage == .server ? "serverAuth" : "clientAuth")
        }
    }

    /// A readable name: the SPIFFE ID for leaves, the subject for CAs.
    static func name(of certificate: Certificate) -> String {
        if let identity = try? identity(of: certificate) { return identity.uri }
        return "\(certificate.subject)"
    }
}

extension SPIFFEID {
    /// The SPIFFE ID of an X509-SVID: its single URI SAN (SPIFFE X509-SVID §2).
    ///
    /// This reads the certificate only; use ``TrustBundle/verify(chain:usage:trustDomain:at:)``
    /// to establish that the identity is trustworthy.
    public init(certificate: Certificate) throws(IdentityError) {
        self = try SPIFFEVerification.identity(of: certificate)
    }
}
