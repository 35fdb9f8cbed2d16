// ztunnel: the node proxy of the one-box ambient mesh, in-pod (shared) mode. It loads a
// ztunnel local config (workloads, services, policies), connects to the node agent over
// ZDS, and serves every enrolled pod from inside that pod's network namespace: HBONE on
// 15008, outbound capture on 15001, inbound plaintext on 15006. Certificates for each
// pod's identity come from the embedded CA (Istio's cacerts layout) through the
// certificate manager, which rotates them.

import ArgumentParser
import Foundation
import HBONE
import IstioCA
import Logging
import MeshIdentity
import MeshState
import NIOHTTP1
import NodeAgent
import ServiceLifecycle
import UnixSignals
import ZDS

@main
struct ZtunnelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ztunnel", abstract: "The ambient node proxy (in-pod mode) over a ztunnel local config.",
        subcommands: [Ztunnel.self, ZC.self], defaultSubcommand: Ztunnel.self
    )
}

struct Ztunnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run the node proxy until SIGTERM/SIGINT."
    )

    @Option(help: "The ztunnel local config (LOCAL_XDS_PATH): workloads, services, policies. Re-read when it changes.")
    var config: String
    @Option(help: "The node agent's ZDS socket (INPOD_UDS).")
    var zdsSocket = "/var/run/ztunnel/ztunnel.sock"
    @Option(help: "The mesh CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem), embedded in this process.")
    var caDir: String?
    @Option(help: "Istio's CA over gRPC instead (CA_ADDRESS), host:port, e.g. 127.0.0.1:15012.")
    var caAddress: String?
    @Option(help: "With --ca-address: the roots the CA's certificate must chain to (CA_ROOT_CA).")
    var caRoot: String?
    @Option(help: "With --ca-address: the bearer token file (AUTH_TOKEN), re-read for every request.")
    var caToken: String?
    @Option(help: "With --ca-address: the identity the CA presents. Default spiffe://<trust-domain>/ns/istio-system/sa/istiod.")
    var caIdentity: String?
    @Option(help: "The mesh trust domain.")
    var trustDomain = "cluster.local"
    @Option(help: "Prometheus metrics port (/metrics, all addresses).")
    var metricsPort = 15020
    @Option(help: "Readiness port (/healthz/ready, all addresses).")
    var readinessPort = 15021
    @Option(help: "Admin port (/config_dump, /logging; 127.0.0.1 only).")
    var adminPort = 15000
    @Option(help: "Access log format, text or json (ztunnel's LOG_FORMAT; the environment variable is the default).")
    var logFormat = ProcessInfo.processInfo.environment["LOG_FORMAT"] ?? "text"
    @Option(help: "Most concurrent streams on one pooled HBONE connection (POOL_MAX_STREAMS_PER_CONNECTION).")
    var poolMaxStreamsPerConnection = 100
    @Option(help: "Seconds an unused pooled HBONE connection is kept (POOL_UNUSED_RELEASE_TIMEOUT); 0 closes it when its last stream ends, and with --pool-max-streams-per-connection 1 turns pooling off.")
    var poolUnusedReleaseTimeout = 300.0
    @Flag(help: "Debug logging.")
    var verbose = false

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = self.verbose ? .debug : .info
            return handler
        }
        let logger = Logger(label: "swift-hbone.ztunnel")
        guard let logFormat = AccessLog.Format(rawValue: self.logFormat) else {
            throw ValidationError("--log-format must be one of \(AccessLog.Format.allCases.map(\.rawValue).joined(separator: ", ")), not \(self.logFormat)")
        }
        let initial: LocalConfig
        do {
            initial = try LocalConfig.parse(try String(contentsOfFile: self.config, encoding: .utf8))
        } catch let error as LocalConfigError {
            throw ValidationError("\(self.config): \(error)")
        }
        guard self.poolMaxStreamsPerConnection >= 1, self.poolUnusedReleaseTimeout >= 0 else {
            throw ValidationError("--pool-max-streams-per-connection must be at least 1 and --pool-unused-release-timeout not negative")
        }
        var hbone = HBONEConfiguration()
        hbone.http2.clientMaximumStreamsPerConnection = self.poolMaxStreamsPerConnection
        hbone.poolIdleTimeout = .milliseconds(Int64(self.poolUnusedReleaseTimeout * 1000))
        let certificates = CertificateManager(provider: try self.certificateProvider())
        let store = StoreBox(MeshStore(initial))
        let metrics = Metrics()
        let proxies = InPodProxies(
            store: store, certificates: certificates, log: AccessLog(store: store, trustDomain: self.trustDomain, format: logFormat), metrics: metrics,
            trustDomain: self.trustDomain, hbone: hbone, logger: logger
        )
        let services: [any ServiceLifecycle.Service] = [
            certificates,
            ZDSClient(path: self.zdsSocket, handler: proxies, logger: logger),
            ConfigWatcher(path: self.config, store: store, proxies: proxies, logger: logger),
            AdminServer(host: "0.0.0.0", port: self.metricsPort, handle: { path in
                path == "/metrics" || path == "/stats/prometheus"
                    ? (.ok, "text/plain; version=0.0.4", metrics.text) : (.notFound, "text/plain", "not found\n")
            }, logger: logger),
            AdminServer(host: "0.0.0.0", port: self.readinessPort, handle: { path in
                guard path == "/healthz/ready" else { return (.notFound, "text/plain", "not found\n") }
                return await proxies.snapshotReceived ? (.ok, "text/plain", "ready\n") : (.serviceUnavailable, "text/plain", "not ready: no ZDS snapshot yet\n")
            }, logger: logger),
            AdminServer(host: "127.0.0.1", port: self.adminPort, handle: { path in
                switch path {
                case "/config_dump": return (.ok, "application/json", await ConfigDump.render(store: store.current, proxies: proxies, certificates: certificates))
                case "/logging": return (.ok, "text/plain", "current log level is \(self.verbose ? "debug" : "info")\n")
                default: return (.notFound, "text/plain", "not found\n")
                }
            }, logger: logger),
        ]
        logger.info("ztunnel starting", metadata: [
            "workloads": "\(initial.workloads.count)", "services": "\(initial.services.count)", "policies": "\(initial.policies.count)",
            "zds": "\(self.zdsSocket)",
        ])
        FileHandle.standardError.write(Data("ztunnel started\n".utf8))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

extension Ztunnel {
    /// The embedded CA (`--ca-dir`) or Istio's CA over gRPC (`--ca-address`).
    func certificateProvider() throws -> any CertificateProvider {
        let trustDomain = try TrustDomain(self.trustDomain)
        switch (self.caDir, self.caAddress) {
        case (let directory?, nil):
            var configuration = CertificateAuthority.Configuration()
            configuration.trustDomain = trustDomain
            return EmbeddedCAProvider(authority: try CertificateAuthority(directory: URL(fileURLWithPath: directory), configuration: configuration))
        case (nil, let address?):
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw ValidationError("--ca-address must be host:port, not \(address)")
            }
            guard let root = self.caRoot, let token = self.caToken else { throw ValidationError("--ca-address needs --ca-root and --ca-token") }
            let roots = try TrustBundle(pem: try String(contentsOfFile: root, encoding: .utf8))
            let identity = try self.caIdentity.map { try SPIFFEID(parsing: $0) }
                ?? SPIFFEID(trustDomain: trustDomain, namespace: "istio-system", serviceAccount: "istiod")
            var configuration = IstioCAClient.Configuration(roots: roots, caIdentity: identity) {
                try String(contentsOfFile: token, encoding: .utf8)
            }
            configuration.host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            configuration.port = port
            return IstioCAClient(configuration: configuration)
        default:
            throw ValidationError("give exactly one of --ca-dir (embedded CA) and --ca-address (Istio's CA over gRPC)")
        }
    }
}

/// Re-reads the config when it changes; an invalid file is logged and the previous config
/// stays in force. After a reload, live inbound connections are re-checked and the ones the
/// new policies deny are closed.
struct ConfigWatcher: ServiceLifecycle.Service {
    let path: String
    let store: StoreBox
    let proxies: InPodProxies
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var last = try? String(contentsOfFile: self.path, encoding: .utf8)
            while !Task.isCancelled {
                do { try await NodeAgent.sleep(.seconds(1)) } catch { return }
                guard let text = try? String(contentsOfFile: self.path, encoding: .utf8), text != last else { continue }
                last = text
                do {
                    self.store.replace(MeshStore(try LocalConfig.parse(text)))
                    self.logger.info("config reloaded", metadata: ["path": "\(self.path)"])
                    await self.proxies.reevaluate()
                } catch {
                    self.logger.error("config rejected, previous config stays in force", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
