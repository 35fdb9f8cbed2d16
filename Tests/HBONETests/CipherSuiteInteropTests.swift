import Foundation
@testable import HBONE
import InternetAddress
import MeshIdentity
import MeshTestSupport
import NIOCore
import NIOPosix
import Testing

/// HBONE's TLS 1.3 suites against OpenSSL's tools: exactly TLS_AES_256_GCM_SHA384 and
/// TLS_AES_128_GCM_SHA256 (ztunnel), although BoringSSL inside swift-nio-ssl also speaks
/// ChaCha20 and cannot be told not to; ``CipherSuiteGuard`` refuses it.
@Suite("HBONE cipher suites against OpenSSL", .serialized)
struct CipherSuiteInteropTests {
    static let strictPolicy = CipherSuitePolicy.current == .hbone

    @Test("our server: s_client gets each AES-GCM suite it asks for; ChaCha20 alone or first gets handshake_failure")
    func server() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is required")
        try #require(Self.strictPolicy, "this CPU has no AES instructions: ChaCha20 is allowed here (CipherSuitePolicy)")
        try await HBONEInteropTests().withFixture { fixture, port in
            // stdin stays open for a second so s_client still reads when the server answers.
            func sClient(_ suites: String) async throws -> String {
                let command = ["openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-alpn", "h2", "-noservername",
                               "-CAfile", fixture.path("root.pem"), "-cert", fixture.path("client.pem"),
                               "-key", fixture.path("client.key"), "-ciphersuites", suites].joined(separator: " ")
                return try await ExternalTool.run(["sh", "-c", "sleep 1 | \(command)"]).combined
            }
            for suite in ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"] {
                let accepted = try await sClient(suite)
                #expect(accepted.contains("New, TLSv1.3, Cipher is \(suite)"), "\(accepted)")
                #expect(!accepted.contains("alert"), "\(accepted)")
            }
            // A client that prefers ChaCha20 is refused too: BoringSSL follows the client's
            // order, where a rustls server with ztunnel's suites would pick the AES one.
            for suites in ["TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"] {
                let refused = try await sClient(suites)
                #expect(refused.contains("alert handshake failure"), "\(refused)")
                #expect(!refused.contains("Cipher is TLS_CHACHA20"), "\(refused)")
            }
            try await eventually("refused connections closed") { fixture.server.openConnections == 0 }
            let good = try await HBONEInteropTests().python(fixture, port: port, ["--authority", "127.0.0.1:8080", "--payload", "after refusals"])
            #expect(good["received"] as? String == "echo:after refusals")
        }
    }

    @Test("our client: an OpenSSL server that picks ChaCha20 gets handshake_failure, and connect says why")
    func client() async throws {
        try #require(OpenSSLCA.isAvailable, "openssl is required")
        try #require(Self.strictPolicy, "this CPU has no AES instructions: ChaCha20 is allowed here (CipherSuitePolicy)")
        let fixture = try await HBONEInteropTests.Fixture()
        try fixture.writeClient(name: "httpbin", identity: fixture.serverIdentity, authority: fixture.ca)
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(probe.localAddress?.port)
        try await probe.close()
        // -no_dhe: otherwise s_server's first line is about DH parameters, not ACCEPT; -www:
        // it answers by itself instead of reading stdin, whose EOF would end each connection.
        let server = try await ExternalPeer([
            "openssl", "s_server", "-accept", "127.0.0.1:\(port)", "-cert", fixture.path("httpbin.pem"),
            "-key", fixture.path("httpbin.key"), "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256",
            "-alpn", "h2", "-no_dhe", "-www",
        ], readyLine: "ACCEPT")
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await fixture.manager.run() }
            defer { group.cancelAll() }
            let client = HBONEClient(certificates: fixture.manager)
            let target = HBONETunnelTarget(
                source: spiffe("default", "sleep"), nextHop: HBONEAddress(ip: .v4(127, 0, 0, 1), port: UInt16(port)),
                expectedIdentities: [fixture.serverIdentity], authority: HBONEAddress(ip: .v4(127, 0, 0, 1), port: 8080)
            )
            do {
                _ = try await client.connect(target, on: MultiThreadedEventLoopGroup.singleton.next())
                Issue.record("a tunnel over ChaCha20 was opened")
            } catch {
                #expect("\(error)".contains("the server chose TLS_CHACHA20_POLY1305_SHA256"), "\(error)")
            }
            await client.closeAllConnections()
        }
        let logs = try await offload { server.stop() }
        #expect(logs.contains("alert handshake failure") || logs.contains("alert number 40"), "s_server said: \(logs)")
        await fixture.upstream.close()
    }
}
