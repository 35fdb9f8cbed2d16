internal import NIOCore
internal import NIOSSL
internal import X509
internal import NIOConcurrencyHelpers
internal import MeshIdentity
internal import Foundation

/// TLS for HBONE, as ztunnel configures rustls (`src/tls/workload.rs`, `src/tls/lib.rs`):
///
/// - TLS 1.3 only, ALPN exactly `h2`, key exchange X25519 or P-256.
/// - The server **requires** a client certificate; the chain must lead to the trust bundle,
///   the leaf must carry clientAuth and a SPIFFE ID in the server's own trust domain.
///   Which identity is allowed is decided later, by authorization.
/// - The client sends no SNI and keeps no session cache; it requires serverAuth and accepts
///   the server only if its SPIFFE ID equals one of the expected identities.
/// - Both present leaf + intermediates from the ``CertificateManager``; a context is built
///   per certificate, so a rotation applies to the next connection without a restart.
///
/// Cipher suites: ztunnel offers exactly TLS_AES_256_GCM_SHA384 and TLS_AES_128_GCM_SHA256.
/// BoringSSL (inside swift-nio-ssl) does not let TLS 1.3 suites be configured and also
/// speaks TLS_CHACHA20_POLY1305_SHA256; ``CipherSuiteGuard``, ahead of the TLS handler on
/// both ends, refuses a handshake whose ServerHello chooses it.
enum HBONETLS {
    /// How long closing a connection waits for the peer's close_notify. NIOSSL's default is
    /// 5 s, which a dead peer (keepalive timeout) would add to every teardown; ztunnel
    /// does not wait for the peer's close_notify at all.
    static let shutdownTimeout: TimeAmount = .milliseconds(500)

    /// Builds a context presenting `certificate`.
    static func makeContext(for certificate: WorkloadCertificate, server: Bool) throws -> NIOSSLContext {
        var configuration = server
            ? TLSConfiguration.makeServerConfiguration(certificateChain: [], privateKey: .privateKey(try key(certificate)))
            : TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        configuration.curves = [.x25519, .secp256r1]
        configuration.applicationProtocols = ["h2"]
        configuration.certificateChain = try certificate.presentedChain.map {
            .certificate(try NIOSSLCertificate(bytes: PEM.der($0), format: .der))
        }
        configuration.privateKey = .privateKey(try key(certificate))
        // Verification is ours (custom callback), so the context needs no trust roots; but a
        // mode other than .none is what makes a server request and require a certificate.
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates([])
        configuration.sendCANameList = false
        configuration.shutdownTimeout = Self.shutdownTimeout
        return try NIOSSLContext(configuration: configuration)
    }

    private static func key(_ certificate: WorkloadCertificate) throws -> NIOSSLPrivateKey {
        try NIOSSLPrivateKey(bytes: Array(certificate.privateKeyPEM.utf8), format: .pem)
    }

    /// Verifies a peer chain and completes `promise`: at once when `cache` holds this chain's
    /// verification, otherwise off the event loop (swift-certificates' verifier is async).
    ///
    /// - Parameters:
    ///   - chain: The peer's chain as presented (leaf first).
    ///   - bundle: The roots to trust.
    ///   - usage: `.client` on the server side, `.server` on the client side.
    ///   - trustDomain: Required trust domain (server side), or `nil`.
    ///   - expected: Identities accepted (client side). With no `trustDomain` either, an
    ///     empty list accepts nothing: a client always names whom it expects (ztunnel's
    ///     `IdentityVerifier` rejects when no SAN matches).
    ///   - cache: Earlier successful verifications.
    ///   - verified: Receives the verified identity before the promise succeeds.
    static func verify(
        chain: [NIOSSLCertificate],
        bundle: TrustBundle,
        usage: TrustBundle.Usage,
        trustDomain: TrustDomain?,
        expected: [SPIFFEID],
        cache: VerifiedChainCache,
        promise: EventLoopPromise<NIOSSLVerificationResultWithMetadata>,
        verified: @escaping @Sendable (Result<SPIFFEID, IdentityError>) -> Void
    ) {
        let der: [[UInt8]]
        do {
            der = try chain.map { try $0.toDERBytes() }
        } catch {
            verified(.failure(.malformedDER(expected: "Certificate", detail: "\(error)")))
            promise.succeed(.failed)
            return
        }
        @Sendable func finish(_ identity: SPIFFEID) {
            if trustDomain == nil || !expected.isEmpty, !expected.contains(identity) {
                verified(.failure(.unexpectedIdentity(actual: identity, expected: expected)))
                promise.succeed(.failed)
                return
            }
            verified(.success(identity))
            promise.succeed(.certificateVerified(VerificationMetadata(NIOSSL.ValidatedCertificateChain(chain))))
        }
        let now = Date()
        if let identity = cache.identity(chain: der, bundle: bundle, usage: usage, trustDomain: trustDomain, at: now) {
            finish(identity)
            return
        }
        Task {
            do {
                let certificates = try der.map { bytes throws(IdentityError) in try PEM.certificate(der: bytes) }
                let identity = try await bundle.verify(chain: certificates, usage: usage, trustDomain: trustDomain, at: now)
                cache.insert(
                    chain: der, certificates: certificates, bundle: bundle, usage: usage, trustDomain: trustDomain,
                    identity: identity, now: now
                )
                finish(identity)
            } catch let error as IdentityError {
                verified(.failure(error))
                promise.succeed(.failed)
            } catch {
                verified(.failure(.untrustedChain(detail: "\(error)")))
                promise.succeed(.failed)
            }
        }
    }
}

/// Caches one TLS context per presented certificate, so rotation takes effect on the next
/// connection and unchanged certificates do not rebuild contexts.
final class TLSContextCache: Sendable {
    private struct Key: Hashable {
        var serial: [UInt8]
        var identity: SPIFFEID
        var server: Bool
    }

    private let contexts = NIOLockedValueBox([Key: NIOSSLContext]())

    func context(for certificate: WorkloadCertificate, server: Bool) throws -> NIOSSLContext {
        let key = Key(serial: Array(certificate.leaf.serialNumber.bytes), identity: certificate.identity, server: server)
        if let cached = self.contexts.withLockedValue({ $0[key] }) { return cached }
        let context = try HBONETLS.makeContext(for: certificate, server: server)
        self.contexts.withLockedValue { contexts in
            // Keep only the newest context per identity and role.
            contexts = contexts.filter { $0.key.identity != key.identity || $0.key.server != key.server }
            contexts[key] = context
        }
        return context
    }
}

extension CertificateManager {
    /// `identity`'s certificate as a future on `eventLoop`: completed at once when a valid one
    /// is issued (the common case, no thread hop), otherwise from the manager's actor.
    nonisolated func certificate(for identity: SPIFFEID, on eventLoop: any EventLoop) -> EventLoopFuture<WorkloadCertificate> {
        if let certificate = self.validCertificate(for: identity) {
            return eventLoop.makeSucceededFuture(certificate)
        }
        let promise = eventLoop.makePromise(of: WorkloadCertificate.self)
        promise.completeWithTask { try await self.certificate(for: identity) }
        return promise.futureResult
    }
}
