// ztunnel: the node proxy of the one-box ambient mesh, in-pod (shared) mode. It loads a
// ztunnel local config (workloads, services, policies), connects to the node agent over
// ZDS, and serves every enrolled pod from inside that pod's network namespace: HBONE on
// 15008, outbound capture on 15001, inbound plaintext on 15006. Certificates for each
// pod's identity come from the embedded CA (Istio's cacerts layout) through the
// certificate manager, which rotates them.

import ArgumentParser
import Foundation
import HBONE
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
    @Option(help: "The mesh CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).")
    var caDir: String
    @Option(help: "The mesh trust domain.")
    var trustDomain = "cluster.local"
    @Option(help: "Prometheus metrics port (/metrics, all addresses).")
    var metricsPort = 15020
    @Option(help: "Readiness port (/healthz/ready, all addresses).")
    var readinessPort = 15021
    @Option(help: "Admin port (/config_dump, /logging; 127.0.0.1 only).")
    var adminPort = 15000
    @Flag(help: "Debug logging.")
    var verbose = false

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = self.verbose ? .debug : .info
            return handler
        }
        let logger = Logger(label: "swift-hbone.ztunnel")
        let initial: LocalConfig
        do {
            initial = try LocalConfig.parse(try String(contentsOfFile: self.config, encoding: .utf8))
        } catch let error as LocalConfigError {
            throw ValidationError("\(self.config): \(error)")
        }
        var caConfiguration = CertificateAuthority.Configuration()
        caConfiguration.trustDomain = try TrustDomain(self.trustDomain)
        let ca = try CertificateAuthority(directory: URL(fileURLWithPath: self.caDir), configuration: caConfiguration)
        let certificates = CertificateManager(provider: EmbeddedCAProvider(authority: ca))
        let store = StoreBox(MeshStore(initial))
        let metrics = Metrics()
        let proxies = InPodProxies(
            store: store, certificates: certificates, log: AccessLog(store: store, trustDomain: self.trustDomain), metrics: metrics,
            trustDomain: self.trustDomain, logger: logger
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
        FileHandle.standardOutput.write(Data("ztunnel started\n".utf8))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
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
