// cni-agent: the node agent. Serves the plugin's `POST /cmdadd` on
// `<run-dir>/pluginevent.sock`, enrolls eligible pods (in-pod redirection, host probe
// ipset, the node proxy over ZDS), follows the pod metadata file, and recovers its state
// after a restart. SIGTERM is an upgrade/restart: in-pod rules, host rules and ipsets stay
// (new ambient pods fail closed until an agent is back). `uninstall` removes host rules,
// ipsets and the plugin from the CNI configuration.

import ArgumentParser
import Foundation
import Logging
import NodeAgent
import Redirect
import ServiceLifecycle
import UnixSignals
import ZDS

@main
struct CNIAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cni-agent",
        abstract: "The ambient node agent: pod enrollment, the CNI plugin API and ZDS.",
        subcommands: [Run.self, Uninstall.self],
        defaultSubcommand: Run.self
    )
}

struct Common: ParsableArguments {
    @Option(help: "The agent's run directory (cni_agent_run_dir): pluginevent.sock and the enrollment record.")
    var runDir = "/var/run/istio-cni"
    @Option(help: "Force the iptables backend (nft or legacy) instead of detecting it (FORCE_IPTABLES_BINARY).")
    var backend: String?
    @Flag(inversion: .prefixedNo, help: "Manage IPv6 rules and the IPv6 probe set (AMBIENT_IPV6).")
    var ipv6 = true
    @Flag(help: "Log at debug level.")
    var verbose = false

    func detectBackend() throws -> IptablesBackend {
        switch self.backend {
        case nil: return try IptablesBackend.detect()
        case "nft": return try IptablesBackend.detect(forced: .nft)
        case "legacy": return try IptablesBackend.detect(forced: .legacy)
        case let other?: throw ValidationError("--backend must be nft or legacy, not \(other)")
        }
    }

    func logger() -> Logger {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = self.verbose ? .debug : .info
            return handler
        }
        return Logger(label: "swift-hbone.agent")
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the agent until SIGTERM/SIGINT.")

    @OptionGroup var common: Common
    @Option(help: "The pod metadata file (YAML; see Docs/cni.md). Default: <run-dir>/pods.yaml.")
    var metadata: String?
    @Option(help: "The ZDS socket the node proxy connects to (ZTUNNEL_UDS_ADDRESS).")
    var zdsSocket = "/var/run/ztunnel/ztunnel.sock"
    @Flag(help: "Run without a node proxy: enroll pods with rules only.")
    var noProxy = false
    @Flag(help: "Do not install the host probe SNAT rule and ipsets.")
    var noHostProbes = false
    @Option(help: "Comma-separated namespaces never enrolled (EXCLUDE_NAMESPACES).")
    var excludeNamespaces = "kube-system"
    @Option(help: "Install the plugin into the primary CNI config in this directory at start (e.g. /etc/cni/net.d).")
    var cniConfDir: String?
    @Option(help: "Enablement selectors as JSON (AMBIENT_ENABLEMENT_SELECTOR; the conflist's enablement_selectors). Default: Istio's.")
    var enablementSelectors: String?
    @Option(help: "Seconds between retries of pending pods.")
    var retrySeconds = 5
    @Flag(help: "Capture the pods' DNS to the node proxy's 15053 (AMBIENT_DNS_CAPTURE). Off by default: the ztunnel example has no DNS proxy yet.")
    var dnsCapture = false

    func run() async throws {
        let logger = self.common.logger()
        let backend = try self.common.detectBackend()
        let runDirectory = self.common.runDir
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        let metadataPath = self.metadata ?? runDirectory + "/pods.yaml"
        let metadata = FileMetadataSource(path: metadataPath)
        var redirection = InPodRedirection.Configuration(backend: backend)
        redirection.rules.captureDNS = self.dnsCapture
        redirection.ipv6 = self.common.ipv6 ? .whenEnabled : .disabled
        var configuration = NodeAgent.Configuration(redirection: redirection, runDirectory: runDirectory)
        configuration.eligibility.excludedNamespaces = Set(self.excludeNamespaces.split(separator: ",").map(String.init))
        if let enablementSelectors {
            do {
                configuration.eligibility.selectors = try JSONDecoder().decode([EnablementSelector].self, from: Data(enablementSelectors.utf8))
            } catch {
                throw ValidationError("--enablement-selectors: \(error)")
            }
        }
        if !self.noHostProbes { configuration.hostProbes = HostProbes(backend: backend, ipv6: self.common.ipv6) }

        let box = AgentBox()
        var zds: ZDSServer?
        if !self.noProxy {
            try FileManager.default.createDirectory(atPath: (self.zdsSocket as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let server = ZDSServer(path: self.zdsSocket, logger: logger) {
                await box.snapshot()
            }
            try server.listen()
            zds = server
        }
        let agent = try NodeAgent(configuration: configuration, proxy: zds, hostNamespace: try NetworkNamespace.host(), logger: logger)
        await box.set(agent)
        let state = (try? await metadata.current()) ?? ClusterState()
        await agent.start(with: state)
        if let cniConfDir {
            let path = try CNIConfigInstaller.install(plugin: [
                "cni_agent_run_dir": runDirectory, "ambient_enabled": true, "pod_metadata_file": metadataPath,
                "exclude_namespaces": Array(configuration.eligibility.excludedNamespaces).sorted(), "plugin_log_level": "info",
                "enablement_selectors": try JSONSerialization.jsonObject(with: JSONEncoder().encode(configuration.eligibility.selectors)),
            ], into: cniConfDir)
            logger.info("plugin installed", metadata: ["conflist": "\(path)"])
        }
        var services: [any Service] = [
            PluginEventServer(agent: agent, metadata: metadata, runDirectory: runDirectory, logger: logger),
            Follow(agent: agent, source: metadata),
            RetryPending(agent: agent, interval: .seconds(self.retrySeconds)),
        ]
        if let zds { services.append(zds) }
        logger.info("agent ready", metadata: ["backend": "\(backend)", "runDir": "\(runDirectory)", "metadata": "\(metadataPath)", "zds": "\(zds?.path ?? "none")"])
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // One line on stdout for supervisors and tests; everything else is on stderr.
        FileHandle.standardOutput.write(Data("agent ready\n".utf8))
        try await group.run()
    }
}

struct Uninstall: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove host rules, probe ipsets and the plugin's CNI config entry.")

    @OptionGroup var common: Common
    @Option(help: "The CNI config directory to remove the plugin from.")
    var cniConfDir: String?

    func run() async throws {
        let backend = try self.common.detectBackend()
        try await HostProbes(backend: backend, ipv6: self.common.ipv6).uninstall(in: try NetworkNamespace.host())
        if let cniConfDir { try CNIConfigInstaller.uninstall(from: cniConfDir) }
        print("host probe rules and ipsets removed")
    }
}

/// Follows the metadata file until shutdown.
struct Follow: Service {
    let agent: NodeAgent
    let source: any PodMetadataSource
    func run() async throws {
        try await cancelWhenGracefulShutdown { try await self.agent.follow(self.source) }
    }
}

/// Retries pending pods until shutdown (the proxy may connect after the agent started).
struct RetryPending: Service {
    let agent: NodeAgent
    let interval: Duration
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await NodeAgent.sleep(self.interval) } catch { return }
                await self.agent.retryPending()
            }
        }
    }
}

/// Lets the ZDS snapshot closure reach the agent created after the server.
actor AgentBox {
    private var agent: NodeAgent?
    func set(_ agent: NodeAgent) { self.agent = agent }
    func snapshot() async -> [ZDSServer.SnapshotEntry] {
        guard let agent = self.agent else { return [] }
        return await agent.snapshot().map { ZDSServer.SnapshotEntry(uid: $0.uid, workload: $0.workload, netnsPath: $0.netns) }
    }
}
