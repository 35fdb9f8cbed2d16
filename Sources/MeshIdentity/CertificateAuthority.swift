public import X509
public import Foundation
internal import Crypto
internal import SwiftASN1

/// An embedded certificate authority that signs workload CSRs the way istiod does.
///
/// ### Signing profile (istio/istio `security/pkg/pki/ca/ca.go` `sign`, `util/generate_cert.go`)
/// - The CSR's self-signature must verify; its subject and SANs are **ignored**: the
///   certificate is issued for the identity the caller *authenticated* as (or was
///   allowed to impersonate), passed separately.
/// - Subject empty; SubjectAltName holds exactly one URI (the SPIFFE ID) and is
///   **critical**, as RFC 5280 §4.2.1.6 requires when the subject is empty.
/// - KeyUsage digitalSignature + keyEncipherment (critical), ExtendedKeyUsage serverAuth +
///   clientAuth (the same certificate is TLS client and server), BasicConstraints CA=false.
/// - Random 128-bit serial; NotBefore back-dated by 2 minutes for clock skew; NotAfter =
///   now + lifetime, clamped to the signing certificate's own NotAfter.
/// - Lifetime: zero or negative means the default (24 h); above the maximum (90 days)
///   the request is **rejected**, not shortened.
/// - The chain comes back leaf first, then the signing CA and intermediates, root last.
public struct CertificateAuthority: Sendable {
    /// How the CA signs.
    public struct Configuration: Sendable, Hashable {
        /// The trust domain whose identities this CA signs. Default `cluster.local`.
        public var trustDomain: TrustDomain = .clusterLocal
        /// Lifetime when the request does not name one (`DEFAULT_WORKLOAD_CERT_TTL`). Default 24 h.
        public var defaultLifetime: Duration = .seconds(24 * 3600)
        /// Longest lifetime accepted (`MAX_WORKLOAD_CERT_TTL`). Default 90 days.
        public var maximumLifetime: Duration = .seconds(90 * 24 * 3600)
        /// How far NotBefore is back-dated. Default 2 minutes.
        public var backdate: Duration = .seconds(120)

        /// The defaults above.
        public init() {}
    }

    /// The certificate whose key signs leaves (the root itself for a self-signed CA).
    public let signingCertificate: Certificate
    private let signingKey: Certificate.PrivateKey
    /// Certificates between the signing certificate and the root, signing certificate first
    /// (empty when the signing certificate is the root).
    public let intermediates: [Certificate]
    /// The trust anchors handed out with every chain.
    public let roots: [Certificate]
    /// The configuration.
    public let configuration: Configuration

    /// The bundle peers should trust.
    public var trustBundle: TrustBundle { TrustBundle(roots: self.roots) }

    // MARK: Creating a CA

    /// Creates a self-signed root CA with a fresh P-256 key, subject `O=<trust domain>`,
    /// valid for `lifetime` (default 10 years, istiod's `CITADEL_SELF_SIGNED_CA_CERT_TTL`).
    public static func selfSigned(
        configuration: Configuration = Configuration(),
        lifetime: Duration = .seconds(10 * 365 * 24 * 3600),
        now: Date = Date()
    ) throws(IdentityError) -> CertificateAuthority {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject: DistinguishedName
        do {
            subject = try DistinguishedName { OrganizationName(configuration.trustDomain.name) }
        } catch {
            throw IdentityError.unusableCA("cannot build subject: \(error)")
        }
        let root = try makeCACertificate(
            subject: subject, publicKey: key.publicKey, issuer: subject, issuerKey: key,
            notBefore: now - 60, notAfter: now + lifetime.timeInterval
        )
        return try CertificateAuthority(
            signingCertificate: root, signingKey: key, intermediates: [], roots: [root], configuration: configuration
        )
    }

    /// Creates an intermediate CA signed by `self` (for tests of multi-level chains and
    /// for a plugged-in intermediate).
    public func issueIntermediate(
        organization: String,
        lifetime: Duration = .seconds(365 * 24 * 3600),
        now: Date = Date()
    ) throws(IdentityError) -> CertificateAuthority {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject: DistinguishedName
        do {
            subject = try DistinguishedName { OrganizationName(organization) }
        } catch {
            throw IdentityError.unusableCA("cannot build subject: \(error)")
        }
        let certificate = try CertificateAuthority.makeCACertificate(
            subject: subject, publicKey: key.publicKey, issuer: self.signingCertificate.subject,
            issuerKey: self.signingKey, notBefore: now - 60,
            notAfter: min(now + lifetime.timeInterval, self.signingCertificate.notValidAfter),
            authorityKeyID: self.signingCertificate
        )
        let chainAbove = self.roots.contains(self.signingCertificate) ? [] : self.intermediates
        return try CertificateAuthority(
            signingCertificate: certificate, signingKey: key, intermediates: [certificate] + chainAbove,
            roots: self.roots, configuration: self.configuration
        )
    }

    /// Loads a plugged-in CA from istiod's `cacerts` PEM files: `ca-cert.pem` (signing
    /// certificate), `ca-key.pem`, `cert-chain.pem` (signing certificate up to, possibly
    /// including, the root) and `root-cert.pem` (one or more roots).
    public init(
        signingCertificatePEM: String,
        signingKeyPEM: String,
        certificateChainPEM: String,
        rootCertificatesPEM: String,
        configuration: Configuration = Configuration()
    ) throws(IdentityError) {
        let signing = try PEM.certificate(signingCertificatePEM)
        let key = try PEM.privateKey(signingKeyPEM)
        let roots = try PEM.certificates(rootCertificatesPEM)
        let chain = certificateChainPEM.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            ? [] : try PEM.certificates(certificateChainPEM)
        // cert-chain.pem may repeat the root; the roots are appended separately.
        let intermediates = chain.filter { !roots.contains($0) }
        try self.init(
            signingCertificate: signing, signingKey: key,
            intermediates: roots.contains(signing) ? [] : (intermediates.first == signing ? intermediates : [signing] + intermediates),
            roots: roots, configuration: configuration
        )
    }

    /// Loads the four `cacerts` files from `directory`.
    public init(directory: URL, configuration: Configuration = Configuration()) throws(IdentityError) {
        func read(_ name: String) throws(IdentityError) -> String {
            do {
                return try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            } catch {
                throw IdentityError.unusableCA("cannot read \(name) in \(directory.path): \(error.localizedDescription)")
            }
        }
        try self.init(
            signingCertificatePEM: read("ca-cert.pem"), signingKeyPEM: read("ca-key.pem"),
            certificateChainPEM: read("cert-chain.pem"), rootCertificatesPEM: read("root-cert.pem"),
            configuration: configuration
        )
    }

    /// Writes the CA in the `cacerts` layout (so a restarted demo or istiod can load it).
    public func write(to directory: URL) throws(IdentityError) {
        let files: [(String, String)] = [
            ("ca-cert.pem", PEM.encode(self.signingCertificate) + "\n"),
            ("ca-key.pem", try PEM.encode(self.signingKey)),
            ("cert-chain.pem", PEM.encode(self.intermediates.isEmpty ? [self.signingCertificate] : self.intermediates)),
            ("root-cert.pem", PEM.encode(self.roots)),
        ]
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for (name, contents) in files {
                let url = directory.appendingPathComponent(name)
                try Data(contents.utf8).write(to: url, options: .atomic)
                if name.hasSuffix("key.pem") {
                    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: url.path)
                }
            }
        } catch {
            throw IdentityError.unusableCA("cannot write to \(directory.path): \(error.localizedDescription)")
        }
    }

    private init(
        signingCertificate: Certificate,
        signingKey: Certificate.PrivateKey,
        intermediates: [Certificate],
        roots: [Certificate],
        configuration: Configuration
    ) throws(IdentityError) {
        guard !roots.isEmpty else { throw IdentityError.unusableCA("no root certificates") }
        guard signingKey.publicKey == signingCertificate.publicKey else {
            throw IdentityError.unusableCA("the signing key does not match the signing certificate")
        }
        let constraints = try? signingCertificate.extensions.basicConstraints
        guard case .isCertificateAuthority = constraints else {
            throw IdentityError.unusableCA("the signing certificate is not a CA (BasicConstraints CA:TRUE missing)")
        }
        try KeyPolicy.check(signingCertificate.publicKey)
        self.signingCertificate = signingCertificate
        self.signingKey = signingKey
        self.intermediates = intermediates
        self.roots = roots
        self.configuration = configuration
    }

    // MARK: Signing

    /// Signs a PEM CSR for `identity`; see ``sign(_:for:lifetime:now:)``.
    public func sign(
        csrPEM: String, for identity: SPIFFEID, lifetime: Duration? = nil, now: Date = Date()
    ) throws(IdentityError) -> [Certificate] {
        try self.sign(PEM.csr(csrPEM), for: identity, lifetime: lifetime, now: now)
    }

    /// Signs `csr` for the authenticated `identity` and returns the chain, leaf first, root last.
    ///
    /// - Parameters:
    ///   - csr: The request; only its public key is used, after its signature is checked.
    ///   - identity: The identity the caller authenticated as; must be in this CA's trust domain.
    ///   - lifetime: Requested validity; `nil` or non-positive means the default.
    ///   - now: The signing time.
    ///   - dnsNames: DNS names to add to the SAN, for a control-plane server's certificate
    ///     (istiod presents `istiod.istio-system.svc`); workload certificates have none.
    public func sign(
        _ csr: CertificateSigningRequest, for identity: SPIFFEID, lifetime: Duration? = nil, now: Date = Date(),
        dnsNames: [String] = []
    ) throws(IdentityError) -> [Certificate] {
        guard identity.trustDomain == self.configuration.trustDomain else {
            throw IdentityError.wrongTrustDomain(expected: self.configuration.trustDomain, actual: identity.trustDomain)
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw IdentityError.invalidCSRSignature
        }
        try KeyPolicy.check(csr.publicKey)
        var effective = self.configuration.defaultLifetime
        if let lifetime, lifetime > .zero {
            guard lifetime <= self.configuration.maximumLifetime else {
                throw IdentityError.lifetimeTooLong(
                    requestedSeconds: lifetime.components.seconds,
                    maximumSeconds: self.configuration.maximumLifetime.components.seconds
                )
            }
            effective = lifetime
        }
        guard self.signingCertificate.notValidAfter > now else {
            throw IdentityError.certificateExpired(
                subject: "\(self.signingCertificate.subject)", notValidAfter: self.signingCertificate.notValidAfter
            )
        }
        let notBefore = now - self.configuration.backdate.timeInterval
        let notAfter = min(now + effective.timeInterval, self.signingCertificate.notValidAfter)
        let leaf: Certificate
        do {
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                Critical(SubjectAlternativeNames([.uniformResourceIdentifier(identity.uri)] + dnsNames.map { .dnsName($0) }))
                try CertificateAuthority.authorityKeyIdentifier(of: self.signingCertificate)
            }
            var generator = SystemRandomNumberGenerator()
            let serial = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
            leaf = try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(bytes: serial),
                publicKey: csr.publicKey,
                notValidBefore: notBefore,
                notValidAfter: notAfter,
                issuer: self.signingCertificate.subject,
                subject: DistinguishedName(),
                extensions: extensions,
                issuerPrivateKey: self.signingKey
            )
        } catch {
            throw IdentityError.unusableCA("signing failed: \(error)")
        }
        return [leaf] + self.intermediates + self.roots
    }

    // MARK: Helpers

    private static func makeCACertificate(
        subject: DistinguishedName,
        publicKey: Certificate.PublicKey,
        issuer: DistinguishedName,
        issuerKey: Certificate.PrivateKey,
        notBefore: Date,
        notAfter: Date,
        authorityKeyID: Certificate? = nil
    ) throws(IdentityError) -> Certificate {
        do {
            let keyID = Array(SHA256.hash(data: publicKey.subjectPublicKeyInfoBytes).prefix(20))
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(keyIdentifier: keyID[...])
                if let authorityKeyID {
                    try authorityKeyIdentifier(of: authorityKeyID)
                }
            }
            var generator = SystemRandomNumberGenerator()
            let serial = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
            return try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(bytes: serial), publicKey: publicKey,
                notValidBefore: notBefore, notValidAfter: notAfter, issuer: issuer, subject: subject,
                extensions: extensions, issuerPrivateKey: issuerKey
            )
        } catch {
            throw IdentityError.unusableCA("cannot create CA certificate: \(error)")
        }
    }

    private static func authorityKeyIdentifier(of issuer: Certificate) throws -> AuthorityKeyIdentifier {
        if let subjectKeyID = try issuer.extensions.subjectKeyIdentifier {
            return AuthorityKeyIdentifier(keyIdentifier: subjectKeyID.keyIdentifier)
        }
        let keyID = Array(SHA256.hash(data: issuer.publicKey.subjectPublicKeyInfoBytes).prefix(20))
        return AuthorityKeyIdentifier(keyIdentifier: keyID[...])
    }
}

extension Duration {
    /// The duration in seconds as a `TimeInterval`.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = self.components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
