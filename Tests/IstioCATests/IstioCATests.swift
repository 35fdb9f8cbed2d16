import Foundation
@testable import IstioCA
import MeshIdentity
import MeshTestSupport
import Testing
import X509

/// Istio's certificate service: the wire messages, our server against an independent gRPC
/// client (Python `grpcio` + `protobuf`, `Tests/Interop/istio_ca.py`), our client against an
/// independent gRPC server (the same script, signing with `cryptography`), and the refusals.
@Suite("Istio CA over gRPC", .serialized)
struct IstioCATests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Interop/istio_ca.py").path
    static let grpcAvailable = (try? ExternalTool.runBlocking(["python3", "-c", "import grpc, google.protobuf, cryptography"]).status) == 0
    static let node = spiffe("istio-system", "ztunnel")
    static let istiod = spiffe("istio-system", "istiod")

    /// A CA on disk plus a server configuration with a node token and an app token.
    struct Fixture {
        let directory: TemporaryDirectory
        let authority: CertificateAuthority
        var configuration = IstioCAServer.Configuration()

        init() throws {
            self.directory = try TemporaryDirectory(prefix: "istio-ca")
            self.authority = try CertificateAuthority.selfSigned()
            try self.authority.write(to: self.directory.url.appendingPathComponent("ca"))
            self.configuration.host = "127.0.0.1"
            self.configuration.port = 0
            self.configuration.tokens = ["node-token": IstioCATests.node, "app-token": spiffe("default", "app")]
        }

        func path(_ name: String) -> String { self.directory.url.appendingPathComponent(name).path }

        /// Runs our server for `body`, with its port.
        func withServer<T: Sendable>(_ body: (Int) async throws -> T) async throws -> T {
            let server = try IstioCAServer(authority: self.authority, configuration: self.configuration)
            let task = Task { try await server.run() }
            defer { task.cancel() }
            return try await body(try await server.port)
        }

        func client(port: Int, token: String = "node-token", caIdentity: SPIFFEID = IstioCATests.istiod) -> IstioCAClient {
            var configuration = IstioCAClient.Configuration(roots: self.authority.trustBundle, caIdentity: caIdentity) { token }
            configuration.port = port
            return IstioCAClient(configuration: configuration)
        }
    }

    @Test("IstioCertificateRequest and Response carry Istio's field numbers and round-trip")
    func messages() throws {
        let request = IstioCertificateService.Request(csr: "C", validityDuration: 300, metadata: ["ImpersonatedIdentity": "x"])
        let bytes = IstioCertificateService.encode(request)
        // csr = 1 (0x0a), validity_duration = 3 (0x18, varint 300 = ac 02), metadata = 4 (0x22):
        // Struct.fields = 1 → entry {key = 1 "ImpersonatedIdentity", value = 2 {string_value = 3 "x"}}.
        let entry: [UInt8] = [0x0a, 20] + Array("ImpersonatedIdentity".utf8) + [0x12, 3, 0x1a, 1, 0x78]
        #expect(bytes == [0x0a, 1, 0x43, 0x18, 0xac, 0x02, 0x22, UInt8(entry.count + 2), 0x0a, UInt8(entry.count)] + entry)
        #expect(try IstioCertificateService.decodeRequest(bytes) == request)
        let response = IstioCertificateService.Response(certificateChain: ["leaf\n", "root\n"])
        #expect(IstioCertificateService.encode(response) == [0x0a, 5] + Array("leaf\n".utf8) + [0x0a, 5] + Array("root\n".utf8))
        #expect(try IstioCertificateService.decodeResponse(IstioCertificateService.encode(response)) == response)
        // Malformed input is an error, never a crash.
        #expect(throws: IstioCertificateService.DecodingError.self) { try IstioCertificateService.decodeRequest([0x0a, 9, 0x41]) }
        #expect(throws: IstioCertificateService.DecodingError.self) { try IstioCertificateService.decodeRequest([0x08, 1]) }
        #expect(throws: IstioCertificateService.DecodingError.self) { try IstioCertificateService.decodeResponse([0x0a, 2, 0xff, 0xfe]) }
        #expect(throws: IstioCertificateService.DecodingError.self) { try GRPCFraming.unframe([0, 0, 0, 0, 9, 1], limit: 100) }
        #expect(throws: IstioCertificateService.DecodingError.self) { try GRPCFraming.unframe([1, 0, 0, 0, 0], limit: 100) }
        #expect(throws: IstioCertificateService.DecodingError.self) { try GRPCFraming.unframe([0, 0, 0, 1, 0] + [UInt8](repeating: 0, count: 256), limit: 100) }
        #expect(try GRPCFraming.unframe(GRPCFraming.frame([1, 2, 3]), limit: 100) == [1, 2, 3])
    }

    @Test("Random bytes never crash the decoders", arguments: 0..<4)
    func fuzz(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        for _ in 0..<2000 {
            let bytes = generator.bytes(Int.random(in: 0..<64, using: &generator))
            _ = try? IstioCertificateService.decodeRequest(bytes)
            _ = try? IstioCertificateService.decodeResponse(bytes)
            _ = try? GRPCFraming.unframe(bytes, limit: 32)
        }
        #expect(throws: IstioCertificateService.DecodingError.self) { try IstioCertificateService.decodeRequest([0x0a, 0x80]) }
    }

    @Test("A Python grpcio client: impersonation for a node account, its own identity otherwise, refusals with gRPC statuses",
          .enabled(if: IstioCATests.grpcAvailable, "needs python3 grpcio, protobuf and cryptography (.ci/run installs them)"))
    func pythonClient() async throws {
        let fixture = try Fixture()
        try await fixture.withServer { port in
            func call(_ arguments: [String]) async throws -> [String: Any] {
                let result = try await ExternalTool.run(["python3", Self.script, "client", "--port", "\(port)", "--root", fixture.path("ca/root-cert.pem")] + arguments)
                let object = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
                return try #require(object, "\(result.combined)")
            }
            let impersonated = try await call(["--token", "node-token", "--impersonate", "spiffe://cluster.local/ns/apps/sa/httpbin", "--validity", "600"])
            #expect(impersonated["code"] as? String == "OK")
            #expect(impersonated["leaf_uri"] as? [String] == ["spiffe://cluster.local/ns/apps/sa/httpbin"])
            #expect(impersonated["same_key"] as? Bool == true, "only the CSR's public key is used")
            let chain = try #require(impersonated["chain"] as? [String])
            #expect(chain.count == 2 && chain.allSatisfy { $0.components(separatedBy: "BEGIN CERTIFICATE").count == 2 }, "one PEM per element")
            let leaf = try PEM.certificate(chain[0])
            #expect(leaf.notValidAfter.timeIntervalSince(Date()) <= 601)

            let own = try await call(["--token", "app-token"])
            #expect(own["leaf_uri"] as? [String] == ["spiffe://cluster.local/ns/default/sa/app"], "the CSR's SAN is ignored")
            let denied = try await call(["--token", "app-token", "--impersonate", "spiffe://cluster.local/ns/apps/sa/httpbin"])
            #expect(denied["code"] as? String == "PERMISSION_DENIED")
            let anonymous = try await call(["--token", "stolen"])
            #expect(anonymous["code"] as? String == "UNAUTHENTICATED")
            let foreign = try await call(["--token", "node-token", "--impersonate", "spiffe://evil.example/ns/a/sa/b"])
            #expect(foreign["code"] as? String == "INVALID_ARGUMENT")
            #expect((foreign["details"] as? String)?.contains("evil.example") == true)
        }
    }

    @Test("Our client against a Python grpcio CA: the certificate manager gets the pod's chain",
          .enabled(if: IstioCATests.grpcAvailable, "needs python3 grpcio, protobuf and cryptography (.ci/run installs them)"))
    func pythonServer() async throws {
        let fixture = try Fixture()
        let csr = try IdentityCSR(identity: Self.istiod)
        let serving = try fixture.authority.sign(csr.request, for: Self.istiod, dnsNames: ["istiod.istio-system.svc"])
        let certificate = try WorkloadCertificate(identity: Self.istiod, privateKey: csr.privateKey, chain: serving)
        _ = try fixture.directory.write("istiod.pem", certificate.certificateChainPEM)
        _ = try fixture.directory.write("istiod.key", certificate.privateKeyPEM)
        let peer = try await ExternalPeer([
            "python3", Self.script, "server", "--port", "0", "--ca-cert", fixture.path("ca/ca-cert.pem"), "--ca-key", fixture.path("ca/ca-key.pem"),
            "--root", fixture.path("ca/root-cert.pem"), "--cert", fixture.path("istiod.pem"), "--key", fixture.path("istiod.key"), "--token", "node-token",
        ])
        defer { _ = peer.stop() }
        let manager = CertificateManager(provider: fixture.client(port: peer.port))
        let httpbin = spiffe("apps", "httpbin")
        let running = Task { try await manager.run() }
        defer { running.cancel() }
        let issued = try await manager.certificate(for: httpbin)
        #expect(issued.identity == httpbin)
        #expect(issued.roots == fixture.authority.roots)
        // A wrong token is refused by the independent server too.
        await #expect(throws: IdentityError.self) {
            _ = try await fixture.client(port: peer.port, token: "wrong").signCertificate(try IdentityCSR(identity: httpbin), lifetime: .seconds(60))
        }
    }

    @Test("Our client: refusals, an impostor CA and a CA that is down are provider failures with the reason")
    func clientFailures() async throws {
        let fixture = try Fixture()
        let httpbin = spiffe("apps", "httpbin")
        try await fixture.withServer { port in
            let chain = try await fixture.client(port: port).signCertificate(try IdentityCSR(identity: httpbin), lifetime: .seconds(600))
            #expect(try SPIFFEID(certificate: chain[0]) == httpbin)
            do {
                _ = try await fixture.client(port: port, token: "wrong").signCertificate(try IdentityCSR(identity: httpbin), lifetime: .seconds(60))
                Issue.record("a wrong token was accepted")
            } catch {
                #expect("\(error)".contains("gRPC status 16"), "\(error)")
            }
            do {
                _ = try await fixture.client(port: port, caIdentity: spiffe("evil", "impostor")).signCertificate(try IdentityCSR(identity: httpbin), lifetime: .seconds(60))
                Issue.record("a CA with an unexpected identity was trusted")
            } catch {
                #expect("\(error)".contains("CA certificate"), "\(error)")
            }
            do {
                _ = try await fixture.client(port: port, token: "app-token").signCertificate(try IdentityCSR(identity: httpbin), lifetime: .seconds(60))
                Issue.record("impersonation by an app was allowed")
            } catch {
                #expect("\(error)".contains("gRPC status 7"), "\(error)")
            }
        }
        // Nothing listens on a port whose server is gone.
        let port = try await fixture.withServer { $0 }
        try await pause(.milliseconds(200))
        do {
            _ = try await fixture.client(port: port).signCertificate(try IdentityCSR(identity: httpbin), lifetime: .seconds(60))
            Issue.record("a CA that is down answered")
        } catch {
            guard case .providerFailed = error else { Issue.record("unexpected \(error)"); return }
        }
    }
}
