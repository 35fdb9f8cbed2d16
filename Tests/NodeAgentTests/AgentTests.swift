import CNI
import Foundation
import MeshTestSupport
@testable import NodeAgent
import Redirect
import ServiceLifecycle
import Synchronization
import Testing
import ZDS

/// A node proxy stand-in on the ZDS client: records the namespaces it was handed.
final class ProxyRecorder: ZDSWorkloadHandler {
    let started = Mutex<[String: UInt64]>([:])
    let stopped = Mutex<[String]>([])
    func start(uid: String, workload: ZDS.WorkloadInfo, namespace: NetworkNamespace) async throws {
        self.started.withLock { $0[uid] = namespace.inode }
    }
    func stop(uid: String) async { self.stopped.withLock { $0.append(uid) } }
    func snapshotComplete() async {}
}

/// The node agent end to end: plugin events, ZDS to a proxy, host probes, reconciliation
/// from the metadata file, restart recovery — against real namespaces.
@Suite("Node agent (real netns, ZDS, ipset)", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"))
struct AgentTests {
    final class Fixture: Sendable {
        let network: PodNetwork
        let directory: TemporaryDirectory
        let metadataPath: String
        let uid = UUID().uuidString.lowercased()

        init() async throws {
            self.network = try await PodNetwork(tag: "agent")
            self.directory = try TemporaryDirectory(prefix: "hbone-agent")
            self.metadataPath = self.directory.url.appendingPathComponent("pods.yaml").path
        }

        var runDirectory: String { self.directory.url.path }
        var zdsPath: String { self.directory.url.appendingPathComponent("ztunnel.sock").path }

        func write(ambient: Bool, present: Bool = true, listIPs: Bool = true) throws {
            var yaml = "namespaces:\n  - name: default\npods:\n"
            if present {
                yaml += """
                  - name: sleep
                    uid: \(self.uid)
                    serviceAccount: sleep
                    netns: \(self.network.podPath)
                    ips: [\(listIPs ? self.network.podIP : "")]
                    labels: {\(ambient ? "istio.io/dataplane-mode: ambient" : "app: sleep")}

                """
            }
            // Atomically: the agent polls the file, and a half-written one lists no pod, which
            // reads as the pod deleted (its rules then stay, as for a pod whose netns is gone).
            try Data(yaml.utf8).write(to: URL(fileURLWithPath: self.metadataPath), options: .atomic)
        }

        func agent(proxy: (any WorkloadProxyLink)?) throws -> NodeAgent {
            let backend = try IptablesBackend.detect()
            let configuration = NodeAgent.Configuration(
                redirection: .init(backend: backend), runDirectory: self.runDirectory,
                hostProbes: HostProbes(backend: backend)
            )
            return try NodeAgent(configuration: configuration, proxy: proxy, hostNamespace: NetworkNamespace(path: self.network.nodePath))
        }

        var rules: String { get async { (try? await self.network.inPod(["iptables-save"]).standardOutput) ?? "" } }
        var probeSet: String { get async { (try? await self.network.inNode(["ipset", "list", "istio-inpod-probes-v4"]).standardOutput) ?? "" } }
    }

    static func running<T>(_ services: [any Service], _ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for service in services { group.addTask { try await service.run() } }
            defer { group.cancelAll() }
            return try await body()
        }
    }

    @Test("a plugin event enrolls the pod: rules, the netns handed to the proxy over ZDS, the probe ipset entry, `enabled`; without a proxy it is `pending`")
    func enrollThroughZDS() async throws {
        let fixture = try await Fixture()
        try fixture.write(ambient: true)
        let agentBox = Mutex<NodeAgent?>(nil)
        let zds = ZDSServer(path: fixture.zdsPath) {
            let agent = agentBox.withLock { $0 }
            return await (agent?.enrollments ?? [:]).map { uid, entry in
                ZDSServer.SnapshotEntry(uid: uid, workload: .init(name: entry.name, namespace: entry.namespace, serviceAccount: "sleep"), netnsPath: entry.netns)
            }
        }
        try zds.listen()
        let agent = try fixture.agent(proxy: zds)
        agentBox.withLock { $0 = agent }
        await agent.start(with: ClusterState())
        let metadata = FileMetadataSource(path: fixture.metadataPath)
        let events = PluginEventServer(agent: agent, metadata: metadata, runDirectory: fixture.runDirectory)
        let event = CNIPluginEvent(netns: fixture.network.podPath, podName: "sleep", podNamespace: "default",
                                   ips: [CNIPluginEvent.ipConfig(cidr: "\(fixture.network.podIP)/24", gateway: nil, interface: 0)!])
        let socket = PluginEventSocket.path(in: fixture.runDirectory)
        try await Self.running([zds, events]) {
            try await events.waitUntilListening()
            // No proxy connected yet: the rules go in, the pod stays pending, the plugin gets a 500.
            let refused = try await offload { try PluginEventClient.post(event, socketPath: socket) }
            #expect(refused.status == 500)
            #expect(refused.body.contains("no ztunnel connection"))
            #expect(await agent.enrollments[fixture.uid]?.state == .pending)
            #expect(await fixture.rules.contains("ISTIO_OUTPUT"))

            let proxy = ProxyRecorder()
            try await Self.running([ZDSClient(path: fixture.zdsPath, handler: proxy)]) {
                try await eventually("the proxy connected") { zds.connectedProxies == 1 }
                // The pending pod was in the snapshot; the agent's periodic retry completes it.
                await agent.retryPending()
                #expect(await agent.enrollments[fixture.uid]?.state == .enabled)
                // The runtime's retried ADD is idempotent.
                let accepted = try await offload { try PluginEventClient.post(event, socketPath: socket) }
                #expect(accepted.status == 200, "\(accepted.body)")
                #expect(await agent.enrollments[fixture.uid]?.state == .enabled)
                #expect(proxy.started.withLock { $0[fixture.uid] } == (try NetworkNamespace(path: fixture.network.podPath).inode))
                let probes = await fixture.probeSet
                #expect(probes.contains("\(fixture.network.podIP) comment \"\(fixture.uid)\""), "\(probes)")

                // Bad input to the plugin API: 400, and the agent keeps serving.
                let garbage = try await offload { try PluginEventClient.send(body: Data("{\"Netns\":".utf8), socketPath: socket, timeout: .seconds(5)) }
                #expect(garbage.status == 400)
                let unknown = CNIPluginEvent(netns: fixture.network.podPath, podName: "ghost", podNamespace: "default", ips: [])
                let ghost = try await offload { try PluginEventClient.post(unknown, socketPath: socket) }
                #expect(ghost.status == 500 && ghost.body.contains("not found"))
                #expect(try await offload { try PluginEventClient.post(event, socketPath: socket) }.status == 200, "still serving")

                // The pod is deleted: ipset entry gone, proxy told, record dropped.
                try fixture.write(ambient: true, present: false)
                await agent.reconcile(with: try await metadata.current())
                #expect(await agent.enrollments[fixture.uid] == nil)
                #expect(await !fixture.probeSet.contains(fixture.network.podIP))
                try await eventually("the proxy stopped the pod") { proxy.stopped.withLock { $0.contains(fixture.uid) } }
            }
        }
    }

    @Test("IPs from the plugin event are kept when the metadata lists none; a reconcile does not lose the probe entry")
    func ipsFromTheEvent() async throws {
        let fixture = try await Fixture()
        try fixture.write(ambient: true, listIPs: false)
        let agent = try fixture.agent(proxy: nil)
        let metadata = FileMetadataSource(path: fixture.metadataPath)
        await agent.start(with: ClusterState())
        let event = CNIPluginEvent(netns: fixture.network.podPath, podName: "sleep", podNamespace: "default",
                                   ips: [CNIPluginEvent.ipConfig(cidr: "\(fixture.network.podIP)/24", gateway: nil, interface: 0)!])
        try await agent.handle(event, metadata: metadata)
        #expect(await agent.enrollments[fixture.uid]?.ips == [fixture.network.podIP])
        await agent.reconcile(with: try await metadata.current())
        #expect(await agent.enrollments[fixture.uid]?.ips == [fixture.network.podIP])
        #expect(await fixture.probeSet.contains(fixture.network.podIP))
        // Deletion removes the entry the event created.
        try fixture.write(ambient: true, present: false)
        await agent.reconcile(with: try await metadata.current())
        #expect(await !fixture.probeSet.contains(fixture.network.podIP))
    }

    @Test("labels: an already-running pod is captured when labelled and released (rules removed) when the label goes")
    func relabel() async throws {
        let fixture = try await Fixture()
        try fixture.write(ambient: false)
        let agent = try fixture.agent(proxy: nil)
        let metadata = FileMetadataSource(path: fixture.metadataPath, pollInterval: .milliseconds(50))
        await agent.start(with: try await metadata.current())
        #expect(await fixture.rules.isEmpty)
        try await Self.running([FollowService(agent: agent, source: metadata)]) {
            try fixture.write(ambient: true)
            try await eventually("captured after labelling") { await agent.enrollments[fixture.uid]?.state == .enabled }
            #expect(await fixture.rules.contains("ISTIO_OUTPUT"))
            try fixture.write(ambient: false)
            try await eventually("released after unlabelling") { await agent.enrollments[fixture.uid] == nil }
            #expect(await !fixture.rules.contains("ISTIO"), "the in-pod rules are removed")
            #expect(await !fixture.probeSet.contains(fixture.network.podIP))
        }
    }

    @Test("restart: a new agent re-derives enrollment from its record and the kernel without duplicating rules; a broken pod does not stop the others")
    func restart() async throws {
        let fixture = try await Fixture()
        try fixture.write(ambient: true)
        let state = try FileMetadataSource.load(fixture.metadataPath)
        let first = try fixture.agent(proxy: nil)
        await first.start(with: state)
        #expect(await first.enrollments[fixture.uid]?.state == .enabled)
        let installed = await fixture.rules.split(separator: "\n").filter { !$0.hasPrefix("#") }

        // A second pod whose netns path is bogus sits in the metadata too.
        var withBroken = state
        withBroken.pods.append(PodInfo(name: "broken", namespace: "default", uid: "broken-uid", labels: ["istio.io/dataplane-mode": "ambient"], netns: "/var/run/netns/does-not-exist", ips: ["10.200.0.9"]))
        let second = try fixture.agent(proxy: nil)
        #expect(await second.enrollments[fixture.uid]?.state == .enabled, "the record survived the restart")
        await second.start(with: withBroken)
        #expect(await fixture.rules.split(separator: "\n").filter { !$0.hasPrefix("#") } == installed, "no duplicate rules")
        #expect(await second.enrollments[fixture.uid]?.state == .enabled)
        #expect(await second.enrollments["broken-uid"] == nil, "the broken pod failed alone")
        #expect(await fixture.probeSet.components(separatedBy: fixture.network.podIP).count == 2, "one probe entry")
    }

    @Test("a CNI ADD racing a metadata reconcile for the same new pod: one install, no error (the work is serialized per pod)")
    func concurrentEnrollment() async throws {
        let fixture = try await Fixture()
        try fixture.write(ambient: true)
        let metadata = FileMetadataSource(path: fixture.metadataPath)
        let state = try await metadata.current()
        let reference = try fixture.agent(proxy: nil)
        await reference.start(with: state)
        let installed = await fixture.rules.split(separator: "\n").filter { !$0.hasPrefix("#") }
        try await reference.removePodFromMesh(uid: fixture.uid, isDelete: false)
        #expect(await !fixture.rules.contains("ISTIO"))

        // Onebox's churn saw this: the pod list is written, then the CNI ADD runs while the
        // agent's watcher reconciles the same pod; two concurrent iptables-nft-restore
        // --noflush runs in one netns fail with "Chain already exists".
        for round in 0..<5 {
            let agent = try fixture.agent(proxy: nil)
            await agent.start(with: ClusterState())
            let event = CNIPluginEvent(netns: fixture.network.podPath, podName: "sleep", podNamespace: "default",
                                       ips: [CNIPluginEvent.ipConfig(cidr: "\(fixture.network.podIP)/24", gateway: nil, interface: 0)!])
            let failures = await withTaskGroup(of: String?.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        if index.isMultiple(of: 2) {
                            do { try await agent.handle(event, metadata: metadata) } catch { return "\(error)" }
                        } else {
                            await agent.reconcile(with: state)
                        }
                        return nil
                    }
                }
                return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
            }
            #expect(failures.isEmpty, "round \(round): \(failures)")
            #expect(await agent.enrollments[fixture.uid]?.state == .enabled, "round \(round)")
            #expect(await fixture.rules.split(separator: "\n").filter { !$0.hasPrefix("#") } == installed, "round \(round): installed exactly once")
            try await agent.removePodFromMesh(uid: fixture.uid, isDelete: false)
            #expect(await !fixture.rules.contains("ISTIO"), "round \(round)")
        }
    }
}

/// Runs ``NodeAgent/follow(_:)`` as a service.
struct FollowService: Service {
    let agent: NodeAgent
    let source: any PodMetadataSource
    func run() async throws { try await self.agent.follow(self.source) }
}
