public import MeshIdentity
public import X509
internal import Foundation
internal import NIOCore
internal import NIOPosix
internal import NIOSSL
internal import NIOHTTP2
internal import NIOHPACK
internal import NIOConcurrencyHelpers

/// A ``CertificateProvider`` that asks Istio's CA over gRPC, as ztunnel's CA client does
/// (ztunnel `src/identity/caclient.rs`): one `CreateCertificate` call per CSR, over TLS 1.3
/// + HTTP/2, with `authorization: Bearer <token>` and `clusterid`, and — for a node proxy
/// acting for a pod — the pod's identity in `metadata.ImpersonatedIdentity`.
///
/// The CA's certificate must chain to `roots` (ztunnel: `CA_ROOT_CA`) and carry the
/// expected SPIFFE identity; the returned leaf must be for the requested identity. Any
/// failure — the CA unreachable, a refusal, a bad chain — is an
/// ``IdentityError/providerFailed(_:)``, which the ``CertificateManager`` retries with
/// backoff while a still-valid certificate keeps serving.
public struct IstioCAClient: CertificateProvider {
    /// Where the CA is and how to talk to it.
    public struct Configuration: Sendable {
        /// The CA's host (an IP address or a name). Default `127.0.0.1`.
        public var host = "127.0.0.1"
        /// The CA's port. Default 15012.
        public var port = 15012
        /// Roots the CA's certificate must chain to.
        public var roots: TrustBundle
        /// The identity the CA must present (istiod's).
        public var caIdentity: SPIFFEID
        /// The bearer token, read for every call so a rotated token file is picked up.
        public var token: @Sendable () throws -> String
        /// `clusterid` header. Default `Kubernetes`, as ztunnel's `CLUSTER_ID`.
        public var clusterID = "Kubernetes"
        /// Ask for the CSR's identity through `ImpersonatedIdentity` (a node proxy acting for
        /// its pods). Default true.
        public var impersonate = true
        /// TCP connect timeout. Default 5 s (ztunnel's).
        public var connectTimeout: Duration = .seconds(5)
        /// Whole-call timeout. Default 10 s.
        public var callTimeout: Duration = .seconds(10)

        /// A configuration with the defaults above.
        public init(roots: TrustBundle, caIdentity: SPIFFEID, token: @escaping @Sendable () throws -> String) {
            self.roots = roots
            self.caIdentity = caIdentity
            self.token = token
        }
    }

    /// The configuration.
    public let configuration: Configuration

    /// A client for the CA that `configuration` names.
    public init(configuration: Configuration) { self.configuration = configuration }

    public func signCertificate(_ csr: IdentityCSR, lifetime: Duration) async throws(IdentityError) -> [Certificate] {
        let configuration = self.configuration
        let token: String
        do {
            token = try configuration.token().trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            throw .providerFailed("CA token: \(error)")
        }
        var metadata: [String: String] = [:]
        if configuration.impersonate { metadata[IstioCertificateService.impersonatedIdentityKey] = csr.identity.uri }
        let request = IstioCertificateService.Request(csr: csr.pem, validityDuration: lifetime.components.seconds, metadata: metadata)
        let response: IstioCertificateService.Response
        do {
            response = try await Self.call(request, token: token, configuration: configuration)
        } catch let error as IdentityError {
            throw error
        } catch let error as NIOConnectionError {
            let reason = error.connectionErrors.first.map { "\($0.error)" } ?? "\(error)"
            throw .providerFailed("CA \(configuration.host):\(configuration.port) unreachable: \(reason)")
        } catch {
            throw .providerFailed("CA \(configuration.host):\(configuration.port): \(error)")
        }
        guard !response.certificateChain.isEmpty else { throw .providerFailed("CA returned an empty chain") }
        var chain: [Certificate] = []
        for pem in response.certificateChain { chain += try PEM.certificates(pem) }
        let issued = try SPIFFEID(certificate: chain[0])
        guard issued == csr.identity else {
            throw .providerFailed("CA issued \(issued), not the requested \(csr.identity)")
        }
        return chain
    }

    private static func call(
        _ request: IstioCertificateService.Request, token: String, configuration: Configuration
    ) async throws -> IstioCertificateService.Response {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.applicationProtocols = ["h2"]
        tls.certificateVerification = .noHostnameVerification
        tls.trustRoots = .certificates([])
        let context = try NIOSSLContext(configuration: tls)
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let verifyError = NIOLockedValueBox<IdentityError?>(nil)
        let multiplexerBox = NIOLockedValueBox<NIOHTTP2Handler.StreamMultiplexer?>(nil)
        let roots = configuration.roots
        let expected = configuration.caIdentity
        let channel = try await ClientBootstrap(group: loop)
            .connectTimeout(Self.timeAmount(configuration.connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil) { chain, promise in
                        let der = chain.compactMap { try? $0.toDERBytes() }
                        promise.completeWithTask {
                            do {
                                let certificates = try der.map { bytes throws(IdentityError) in try PEM.certificate(der: bytes) }
                                let identity = try await roots.verify(chain: certificates, usage: .server, trustDomain: nil, at: Date())
                                guard identity == expected else { throw IdentityError.unexpectedIdentity(actual: identity, expected: [expected]) }
                                return .certificateVerified(VerificationMetadata(NIOSSL.ValidatedCertificateChain(chain)))
                            } catch let error as IdentityError {
                                verifyError.withLockedValue { $0 = error }
                                return .failed
                            }
                        }
                    })
                    // HTTP/2 goes in with TLS, before the connection is active. Added after
                    // `connect` returned, it could miss the CA's SETTINGS (sent as soon as the
                    // handshake completes: they reached the pipeline's tail and were dropped),
                    // and nio-http2, never seeing the server preface, left the call hanging.
                    let multiplexer = try sync.configureHTTP2Pipeline(
                        // Small unary messages: nio-http2's default windows are fine for the control plane.
                        mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
                    ) { stream in
                        stream.close()
                    }
                    multiplexerBox.withLockedValue { $0 = multiplexer }
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .get()
        defer { channel.close(promise: nil) }
        let message: [UInt8]
        do {
            // A refused CA certificate closes the channel: whichever step notices first
            // (stream creation, the call), the verification error is the reason.
            guard let multiplexer = multiplexerBox.withLockedValue({ $0 }) else { throw ChannelError.ioOnClosedChannel }
            let promise = loop.makePromise(of: [UInt8].self)
            let timeout = loop.scheduleTask(in: Self.timeAmount(configuration.callTimeout)) {
                promise.fail(IdentityError.providerFailed("CA call timed out after \(configuration.callTimeout)"))
            }
            defer { timeout.cancel() }
            let body = GRPCFraming.frame(IstioCertificateService.encode(request))
            var headers = HPACKHeaders()
            headers.add(name: ":method", value: "POST")
            headers.add(name: ":scheme", value: "https")
            headers.add(name: ":path", value: IstioCertificateService.createCertificatePath)
            headers.add(name: ":authority", value: "\(configuration.host):\(configuration.port)")
            headers.add(name: "content-type", value: "application/grpc")
            headers.add(name: "te", value: "trailers")
            headers.add(name: "authorization", value: "Bearer \(token)")
            headers.add(name: "clusterid", value: configuration.clusterID)
            let request = headers
            do {
                _ = try await multiplexer.createStreamChannel { stream in
                    stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandler(CACallHandler(headers: request, body: body, response: promise))
                    }
                }.get()
            } catch {
                // No stream, so no handler will ever complete the call's promise.
                promise.fail(error)
                throw error
            }
            message = try await promise.futureResult.get()
        } catch {
            if let verification = verifyError.withLockedValue({ $0 }) { throw IdentityError.providerFailed("CA certificate: \(verification)") }
            throw error
        }
        return try IstioCertificateService.decodeResponse(message)
    }
}

extension IstioCAClient {
    /// A `Duration` as NIO's `TimeAmount`, sub-second parts included.
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Sends one unary call on a new stream and completes `response` with the message, or
/// fails it with the gRPC status (or the stream's end without one).
final class CACallHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let headers: HPACKHeaders
    private let body: [UInt8]
    private let response: EventLoopPromise<[UInt8]>
    private var received: [UInt8] = []
    private var status: String?

    init(headers: HPACKHeaders, body: [UInt8], response: EventLoopPromise<[UInt8]>) {
        self.headers = headers
        self.body = body
        self.response = response
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(Self.wrapOutboundOut(.headers(.init(headers: self.headers))), promise: nil)
        let buffer = context.channel.allocator.buffer(bytes: self.body)
        context.writeAndFlush(Self.wrapOutboundOut(.data(.init(data: .byteBuffer(buffer), endStream: true))), promise: nil)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.channelActive(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .headers(let frame):
            if let status = frame.headers.first(name: ":status"), status != "200" {
                self.response.fail(IdentityError.providerFailed("CA answered HTTP \(status)"))
            }
            if let grpc = frame.headers.first(name: "grpc-status") {
                self.status = grpc
                if grpc == "0" {
                    do {
                        self.response.succeed(try GRPCFraming.unframe(self.received, limit: 1 << 20))
                    } catch {
                        self.response.fail(IdentityError.providerFailed("CA response: \(error)"))
                    }
                } else {
                    let message = (frame.headers.first(name: "grpc-message") ?? "").removingPercentEncoding ?? ""
                    self.response.fail(IdentityError.providerFailed("CA refused (gRPC status \(grpc)): \(message)"))
                }
            }
        case .data(let frame):
            if case .byteBuffer(var buffer) = frame.data, self.received.count < 1 << 20 {
                self.received += buffer.readBytes(length: buffer.readableBytes) ?? []
            }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.response.fail(IdentityError.providerFailed("CA stream ended without a gRPC status"))
        context.fireChannelInactive()
    }
}
