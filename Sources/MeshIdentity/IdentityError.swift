public import Foundation

/// A typed error from the identity module: bad input, a certificate that does not
/// verify, or a CA that refused to sign.
///
/// Every case says *what* is wrong in terms a mesh operator recognises; none of them
/// is a crash. ``SPIFFEIDError`` covers malformed identity strings.
public enum IdentityError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The text is not PEM of the expected kind (`CERTIFICATE`, `CERTIFICATE REQUEST`, `PRIVATE KEY`).
    case malformedPEM(expected: String, detail: String)
    /// The bytes are not valid DER for the expected structure.
    case malformedDER(expected: String, detail: String)
    /// The CSR's self-signature does not verify with its own public key.
    case invalidCSRSignature
    /// The key type or size is not accepted (ECDSA P-256/P-384 and RSA ≥ 2048 are).
    case unsupportedKey(String)
    /// A requested certificate lifetime above the CA's maximum (istiod rejects, never clamps).
    case lifetimeTooLong(requestedSeconds: Int64, maximumSeconds: Int64)
    /// A requested lifetime of zero or less where a positive one is required.
    case invalidLifetime(requestedSeconds: Int64)
    /// The identity belongs to another trust domain.
    case wrongTrustDomain(expected: TrustDomain, actual: TrustDomain)
    /// A certificate in the chain has expired.
    case certificateExpired(subject: String, notValidAfter: Date)
    /// A certificate in the chain is not valid yet.
    case certificateNotYetValid(subject: String, notValidBefore: Date)
    /// The chain does not lead to any root of the trust bundle (or a signature is wrong).
    case untrustedChain(detail: String)
    /// The leaf carries no SPIFFE URI SAN.
    case missingSPIFFEID
    /// The leaf carries more than one URI SAN (SPIFFE X509-SVID §2 allows exactly one).
    case multipleURISANs(count: Int)
    /// The leaf's SPIFFE URI SAN did not parse.
    case invalidSPIFFEID(SPIFFEIDError)
    /// The leaf lacks the extended key usage the connection needs.
    case missingExtendedKeyUsage(String)
    /// The peer's identity is not one of those expected.
    case unexpectedIdentity(actual: SPIFFEID, expected: [SPIFFEID])
    /// The CA's own material is unusable (not a CA, key mismatch, expired, incomplete).
    case unusableCA(String)
    /// The certificate provider failed (network, remote CA error).
    case providerFailed(String)
    /// The certificate manager stopped before the certificate was available.
    case managerShutDown
    /// The certificate for the identity is unavailable (the last attempt's error).
    case unavailable(identity: SPIFFEID, reason: String)

    public var description: String {
        switch self {
        case .malformedPEM(let expected, let detail): return "malformed PEM (expected \(expected)): \(detail)"
        case .malformedDER(let expected, let detail): return "malformed DER (expected \(expected)): \(detail)"
        case .invalidCSRSignature: return "CSR signature does not verify with the CSR's public key"
        case .unsupportedKey(let key): return "unsupported key \(key): use ECDSA P-256/P-384 or RSA of at least 2048 bits"
        case .lifetimeTooLong(let requested, let maximum):
            return "requested lifetime \(requested) s exceeds the maximum \(maximum) s"
        case .invalidLifetime(let requested): return "requested lifetime \(requested) s is not positive"
        case .wrongTrustDomain(let expected, let actual):
            return "identity in trust domain \(actual), expected \(expected)"
        case .certificateExpired(let subject, let notAfter): return "certificate \(subject) expired at \(notAfter)"
        case .certificateNotYetValid(let subject, let notBefore):
            return "certificate \(subject) is not valid before \(notBefore)"
        case .untrustedChain(let detail): return "certificate chain is not trusted: \(detail)"
        case .missingSPIFFEID: return "certificate has no SPIFFE URI SAN"
        case .multipleURISANs(let count): return "certificate has \(count) URI SANs, exactly one is allowed"
        case .invalidSPIFFEID(let error): return error.description
        case .missingExtendedKeyUsage(let usage): return "certificate lacks extended key usage \(usage)"
        case .unexpectedIdentity(let actual, let expected):
            return "peer identity \(actual) is not one of \(expected.map(\.uri))"
        case .unusableCA(let detail): return "CA material unusable: \(detail)"
        case .providerFailed(let detail): return "certificate provider failed: \(detail)"
        case .managerShutDown: return "certificate manager shut down"
        case .unavailable(let identity, let reason): return "certificate for \(identity) unavailable: \(reason)"
        }
    }
}
