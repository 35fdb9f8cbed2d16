public import MeshIdentity
public import Logging
public import ServiceLifecycle
internal import Foundation
internal import X509
internal import NIOCore
internal import NIOPosix
internal import NIOSSL
internal import NIOHTTP2
internal import NIOHPACK
internal import NIOConcurrencyHelpers

/// istiod's CA endpoint for the embedded ``CertificateAuthority``: gRPC
/// `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS 1.3 + HTTP/2 (Istio
/// serves it on 15012).
///
/// It authenticates and authorizes as istiod does (istio `security/pkg/server/ca/server.go`,
/// `node_auth.go`):
/// - the caller is `authorization: Bearer <token>`, mapped to an identity (istiod reviews a
///   Kubernetes service-account JWT; here the tokens are configured) — otherwise
///   `UNAUTHENTICATED` (16);
/// - the certificate is for the caller's own identity, unless the request's metadata carries
///   `ImpersonatedIdentity` and the caller's `namespace/serviceaccount` is one of the trusted
///   node accounts (`CA_TRUSTED_NODE_ACCOUNTS`) — otherwise `PERMISSION_DENIED` (7);
/// - only the CSR's public key is used; its SAN is ignored;
/// - the chain comes back one PEM certificate per element, leaf first, root last.
///
/// The server presents a certificate for its own SPIFFE identity (default
/// `spiffe://<td>/ns/istio-system/sa/istiod`) and `istiod.istio-system.svc`, issued by the
/// same CA at start.
public final class IstioCAServer: Service, Sendable {
    /// How the server listens and whom it trusts.
    public struct Configuration: Sendable {
        /// Listening address. Default `0.0.0.0`.
        public var host = "0.0.0.0"
        /// Listening port. Default 15012 (istiod's). 0 picks a free port.
        public var port = 15012
        /// Bearer tokens and the identity each one authenticates.
        public var tokens: [String: SPIFFEID] = [:]
        /// `namespace/serviceaccount` of callers allowed to impersonate (node proxies).
        /// Default `istio-system/ztunnel`, as Istio's `CA_TRUSTED_NODE_ACCOUNTS`.
        public var trustedNodeAccounts: Set<String> = ["istio-system/ztunnel"]
        /// DNS names in the server's certificate, next to its SPIFFE ID, for clients that
        /// check a host name (ztunnel's `CA_ADDRESS`). Default `istiod.istio-system.svc`.
        public var dnsNames = ["istiod.istio-system.svc"]
        /// Largest request accepted, in bytes. Default 64 KiB.
        public var maximumRequestSize = 64 * 1024

        /// The defaults above.
        public init() {}
    }

    private let authority: CertificateAuthority
    private let identity: SPIFFEID
    private let configuration: Configuration
    private let logger: Logger
    private let address: EventLoopPromise<SocketAddress>

    /// A server for `authority`, presenting a certificate for `identity` (istiod's by default).
    public init(
        authority: CertificateAuthority, identity: SPIFFEID? = nil, configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "swift-hbone.istio-ca")
    ) throws(IdentityError) {
        self.authority = authority
        if let identity {
            self.identity = identity
        } else {
            do {
                self.identity = try SPIFFEID(trustDomain: authority.configuration.trustDomain, namespace: "istio-system", serviceAccount: "istiod")
            } catch {
                throw .invalidSPIFFEID(error)
            }
        }
        self.configuration = configuration
        self.logger = logger
        self.address = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: SocketAddress.self)
    }

    /// The bound port, once listening.
    public var port: Int {
        get async throws { try await self.address.futureResult.get().port ?? 0 }
    }

    public func run() async throws {
        let csr = try IdentityCSR(identity: self.identity)
        let chain = try self.authority.sign(csr.request, for: self.identity, dnsNames: self.configuration.dnsNames)
        let certificate = try WorkloadCertificate(identity: self.identity, privateKey: csr.privateKey, chain: chain)
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try certificate.presentedChain.map { .certificate(try NIOSSLCertificate(bytes: PEM.der($0), format: .der)) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(certificate.privateKeyPEM.utf8), format: .pem))
        )
        tls.minimumTLSVersion = .tlsv13
        tls.applicationProtocols = ["h2"]
        tls.certificateVerification = .none
        let context = try NIOSSLContext(configuration: tls)
        let shared = CAStreamHandler.Shared(
            authority: self.authority, configuration: self.configuration, logger: self.logger
        )
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(NIOSSLServerHandler(context: context))
                        _ = try sync.configureHTTP2Pipeline(
                            // Small unary messages: nio-http2's default windows are fine for the control plane.
                            mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                        ) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(CAStreamHandler(shared: shared))
                            }
                        }
                    }
                }
                .bind(host: self.configuration.host, port: self.configuration.port)
                .get()
        } catch {
            self.address.fail(error)
            throw error
        }
        if let local = channel.localAddress { self.address.succeed(local) } else { self.address.fail(ChannelError.unknownLocalAddress) }
        self.logger.info("CA listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "identity": "\(self.identity)"])
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await channel.closeFuture.get()
            } onCancel: {
                channel.close(promise: nil)
            }
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// One gRPC call: collect the request, decide, answer with the chain or a trailers-only error.
final class CAStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    struct Shared: Sendable {
        let authority: CertificateAuthority
        let configuration: IstioCAServer.Configuration
        let logger: Logger
    }

    private let shared: Shared
    private var headers: HPACKHeaders?
    private var body: [UInt8] = []
    private var answered = false

    init(shared: Shared) { self.shared = shared }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.answered else { return }
        switch Self.unwrapInboundIn(data) {
        case .headers(let frame):
            if self.headers == nil { self.headers = frame.headers }
            if frame.endStream { self.finish(context: context) }
        case .data(let frame):
            guard case .byteBuffer(var buffer) = frame.data else { return }
            guard self.body.count + buffer.readableBytes <= self.shared.configuration.maximumRequestSize + 5 else {
                return self.fail(.resourceExhausted, "request larger than \(self.shared.configuration.maximumRequestSize) bytes", context: context)
            }
            self.body += buffer.readBytes(length: buffer.readableBytes) ?? []
            if frame.endStream { self.finish(context: context) }
        default:
            break
        }
    }

    private func finish(context: ChannelHandlerContext) {
        let headers = self.headers ?? HPACKHeaders()
        let outcome = Self.answer(headers: headers, body: self.body, shared: self.shared)
        switch outcome {
        case .success(let chain):
            self.answered = true
            var response = HPACKHeaders()
            response.add(name: ":status", value: "200")
            response.add(name: "content-type", value: "application/grpc")
            context.write(Self.wrapOutboundOut(.headers(.init(headers: response))), promise: nil)
            let message = GRPCFraming.frame(IstioCertificateService.encode(IstioCertificateService.Response(certificateChain: chain)))
            context.write(Self.wrapOutboundOut(.data(.init(data: .byteBuffer(context.channel.allocator.buffer(bytes: message))))), promise: nil)
            var trailers = HPACKHeaders()
            trailers.add(name: "grpc-status", value: "0")
            context.writeAndFlush(Self.wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: nil)
        case .failure(let failure):
            self.fail(failure.status, failure.message, context: context)
        }
    }

    struct Failure: Error {
        var status: GRPCFraming.Status
        var message: String
    }

    /// The decision, without I/O: the chain (PEM per certificate) or the gRPC error.
    static func answer(headers: HPACKHeaders, body: [UInt8], shared: Shared) -> Result<[String], Failure> {
        guard headers.first(name: ":method") == "POST" else { return .failure(.init(status: .unimplemented, message: "gRPC calls are POST")) }
        guard headers.first(name: ":path") == IstioCertificateService.createCertificatePath else {
            return .failure(.init(status: .unimplemented, message: "unknown method \(headers.first(name: ":path") ?? "-")"))
        }
        guard headers.first(name: "content-type")?.hasPrefix("application/grpc") == true else {
            return .failure(.init(status: .invalidArgument, message: "content-type must be application/grpc"))
        }
        let authorization = headers.first(name: "authorization") ?? ""
        guard authorization.hasPrefix("Bearer "), let caller = shared.configuration.tokens[String(authorization.dropFirst(7))] else {
            return .failure(.init(status: .unauthenticated, message: "authenticate caller: no valid bearer token"))
        }
        let request: IstioCertificateService.Request
        do {
            request = try IstioCertificateService.decodeRequest(GRPCFraming.unframe(body, limit: shared.configuration.maximumRequestSize))
        } catch {
            return .failure(.init(status: .invalidArgument, message: "\(error)"))
        }
        var identity = caller
        if let impersonated = request.metadata[IstioCertificateService.impersonatedIdentityKey], !impersonated.isEmpty {
            guard shared.configuration.trustedNodeAccounts.contains("\(caller.namespace)/\(caller.serviceAccount)") else {
                return .failure(.init(status: .permissionDenied, message: "\(caller) may not impersonate \(impersonated)"))
            }
            do {
                identity = try SPIFFEID(parsing: impersonated)
            } catch {
                return .failure(.init(status: .invalidArgument, message: "ImpersonatedIdentity \(impersonated): \(error)"))
            }
        }
        do {
            let lifetime: Duration? = request.validityDuration > 0 ? .seconds(request.validityDuration) : nil
            let chain = try shared.authority.sign(csrPEM: request.csr, for: identity, lifetime: lifetime)
            shared.logger.info("certificate issued", metadata: ["identity": "\(identity)", "caller": "\(caller)"])
            return .success(chain.map { PEM.encode($0) })
        } catch {
            return .failure(.init(status: .invalidArgument, message: "\(error)"))
        }
    }

    /// A trailers-only response (gRPC: HEADERS with the status and END_STREAM, no body).
    private func fail(_ status: GRPCFraming.Status, _ message: String, context: ChannelHandlerContext) {
        self.answered = true
        self.shared.logger.warning("certificate request refused", metadata: ["status": "\(status.rawValue)", "reason": "\(message)"])
        var headers = HPACKHeaders()
        headers.add(name: ":status", value: "200")
        headers.add(name: "content-type", value: "application/grpc")
        headers.add(name: "grpc-status", value: "\(status.rawValue)")
        headers.add(name: "grpc-message", value: Self.percentEncoded(message))
        context.writeAndFlush(Self.wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
    }

    /// `grpc-message` is percent-encoded (gRPC over HTTP/2: Percent-Encoded).
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20, byte <= 0x7e, byte != 0x25 { out.unicodeScalars.append(Unicode.Scalar(byte)) } else { out += String(format: "%%%02X", byte) }
        }
        return out
    }
}
