public import X509
internal import Foundation

/// Something that turns a CSR into a signed chain: the embedded CA now, Istio's CA
/// (`istio.v1.auth.IstioCertificateService/CreateCertificate` over gRPC) later.
///
/// The request mirrors `IstioCertificateRequest`: a PEM CSR, the requested validity,
/// and (for a node proxy acting for a pod) the identity to impersonate.
public protocol CertificateProvider: Sendable {
    /// Signs `csr` for `identity` and returns the chain, leaf first, roots last.
    func signCertificate(
        _ csr: IdentityCSR,
        lifetime: Duration
    ) async throws(IdentityError) -> [Certificate]
}

/// A ``CertificateProvider`` backed by an in-process ``CertificateAuthority``.
///
/// It plays istiod's part in the one-box mesh: the node proxy asks for a pod's
/// identity (impersonation) and the CA signs it. Authentication of the caller is the
/// embedding program's business: whoever holds this provider may ask for any identity
/// in the CA's trust domain.
public struct EmbeddedCAProvider: CertificateProvider {
    /// The CA that signs.
    public let authority: CertificateAuthority
    private let clock: any IdentityClock

    /// Wraps `authority`, reading the signing time from `clock`.
    public init(authority: CertificateAuthority, clock: any IdentityClock = SystemIdentityClock()) {
        self.authority = authority
        self.clock = clock
    }

    public func signCertificate(_ csr: IdentityCSR, lifetime: Duration) async throws(IdentityError) -> [Certificate] {
        try self.authority.sign(csr.request, for: csr.identity, lifetime: lifetime, now: self.clock.now)
    }
}
