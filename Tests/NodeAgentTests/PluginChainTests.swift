import CNI
import Foundation
import MeshTestSupport
import NodeAgent
import Redirect
import Testing

/// The `istio-cni` binary chained after Debian's `bridge` + `host-local`, driven exactly as a
/// runtime drives a conflist (env + stdin, `prevResult` threaded through, DEL in reverse),
/// against real network namespaces and a real node agent on `pluginevent.sock`.
@Suite("istio-cni plugin in a real CNI chain", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"),
       .enabled(if: FileManager.default.fileExists(atPath: "/usr/lib/cni/bridge"), "needs containernetworking-plugins (scripts/install-deps installs it)"))
struct PluginChainTests {
    /// A node namespace (where the runtime and the plugins run, so `bridge` never touches the
    /// real host), a temp run directory, the metadata file and the agent.
    final class Node: Sendable {
        let name = "hbcn-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        let directory: TemporaryDirectory
        let binDirectory: String
        let metadataPath: String

        init() async throws {
            self.directory = try TemporaryDirectory(prefix: "hbone-cni")
            self.binDirectory = self.directory.url.appendingPathComponent("bin").path
            try FileManager.default.createDirectory(atPath: self.binDirectory, withIntermediateDirectories: true)
            for plugin in ["bridge", "host-local", "loopback"] {
                try FileManager.default.createSymbolicLink(atPath: "\(self.binDirectory)/\(plugin)", withDestinationPath: "/usr/lib/cni/\(plugin)")
            }
            try FileManager.default.createSymbolicLink(atPath: "\(self.binDirectory)/istio-cni", withDestinationPath: PluginChainTests.pluginBinary)
            self.metadataPath = self.directory.url.appendingPathComponent("pods.yaml").path
            #expect(try await ExternalTool.run(["ip", "netns", "add", self.name]).status == 0)
            #expect(try await ExternalTool.run(["ip", "-n", self.name, "link", "set", "lo", "up"]).status == 0)
        }

        deinit {
            _ = try? ExternalTool.runBlocking(["ip", "netns", "del", self.name])
        }

        var runDirectory: String { self.directory.url.appendingPathComponent("run").path }

        /// The plugin objects of the conflist.
        func plugins(ambient: Bool = true) -> [JSONValue] {
            [
                .object([
                    "type": "bridge", "bridge": "cni-hb0", "isGateway": .bool(true), "ipMasq": .bool(false),
                    "ipam": .object(["type": "host-local", "subnet": "10.88.0.0/24", "dataDir": .string(self.directory.url.appendingPathComponent("ipam").path)]),
                ]),
                .object([
                    "type": "istio-cni", "cni_agent_run_dir": .string(self.runDirectory), "ambient_enabled": .bool(ambient),
                    "exclude_namespaces": .array(["kube-system"]), "pod_namespace": "istio-system", "plugin_log_level": "debug",
                    "pod_metadata_file": .string(self.metadataPath),
                ]),
            ]
        }

        /// Execs `type` in the node namespace as a runtime would.
        func exec(_ type: String, command: String, config: JSONValue, pod: Pod) async throws -> (status: Int32, output: JSONValue?, raw: String, log: String) {
            let env = [
                "CNI_COMMAND=\(command)", "CNI_CONTAINERID=\(pod.containerID)", "CNI_NETNS=\(pod.netnsPath)",
                "CNI_IFNAME=eth0", "CNI_PATH=\(self.binDirectory)",
                "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=\(pod.namespace);K8S_POD_NAME=\(pod.name);K8S_POD_INFRA_CONTAINER_ID=\(pod.containerID)",
            ]
            let result = try await ExternalTool.run(
                ["ip", "netns", "exec", self.name, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"] + env + ["\(self.binDirectory)/\(type)"],
                input: String(decoding: config.jsonData, as: UTF8.self)
            )
            return (result.status, try? JSONValue(parsing: Data(result.standardOutput.utf8)), result.standardOutput, result.standardError)
        }

        /// libcni's `AddNetworkList`: each plugin gets the list's version and name and the previous result.
        func add(_ pod: Pod, version: String, ambient: Bool = true) async throws -> (bridge: JSONValue?, ours: (status: Int32, output: JSONValue?, raw: String, log: String)) {
            let plugins = self.plugins(ambient: ambient)
            let bridgeVersion = version == "1.1.0" ? "1.0.0" : version
            // The runtime brings up the pod's loopback first (containerd runs `loopback` itself).
            let loopback = try await self.exec("loopback", command: "ADD", config: .object(["cniVersion": .string(bridgeVersion), "name": "lo", "type": "loopback"]), pod: pod)
            #expect(loopback.status == 0, "loopback ADD: \(loopback.raw)")
            let bridge = try await self.exec("bridge", command: "ADD", config: Self.config(plugins[0], version: bridgeVersion, previous: nil), pod: pod)
            #expect(bridge.status == 0, "bridge ADD: \(bridge.raw) \(bridge.log)")
            var previous = bridge.output
            if version == "1.1.0", case .object(var object)? = previous {
                // containernetworking-plugins 1.1.1 stops at 1.0.0; a 1.1.0 result has the same shape.
                object["cniVersion"] = "1.1.0"
                previous = .object(object)
            }
            let ours = try await self.exec("istio-cni", command: "ADD", config: Self.config(plugins[1], version: version, previous: previous), pod: pod)
            return (previous, ours)
        }

        static func config(_ plugin: JSONValue, version: String, previous: JSONValue?) -> JSONValue {
            guard case .object(var object) = plugin else { return plugin }
            object["cniVersion"] = .string(version)
            object["name"] = "hbnet"
            if let previous { object["prevResult"] = previous }
            return .object(object)
        }

        func writeMetadata(_ pods: [Pod]) throws {
            var yaml = "namespaces:\n  - name: default\n    labels: {}\npods:\n"
            for pod in pods {
                yaml += """
                  - name: \(pod.name)
                    namespace: \(pod.namespace)
                    uid: \(pod.uid)
                    serviceAccount: sleep
                    netns: \(pod.netnsPath)
                    labels: {\(pod.ambient ? "istio.io/dataplane-mode: ambient" : "app: plain")}

                """
            }
            try Data(yaml.utf8).write(to: URL(fileURLWithPath: self.metadataPath), options: .atomic)
        }
    }

    /// A pod: a fresh network namespace the runtime created.
    final class Pod: Sendable {
        let name: String
        let namespace = "default"
        let uid = UUID().uuidString.lowercased()
        let containerID = "c\(UInt32.random(in: 0..<UInt32.max))"
        let netnsName = "hbcp-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        let ambient: Bool
        var netnsPath: String { "/var/run/netns/\(self.netnsName)" }

        init(name: String, ambient: Bool) async throws {
            self.name = name
            self.ambient = ambient
            #expect(try await ExternalTool.run(["ip", "netns", "add", self.netnsName]).status == 0)
        }

        deinit {
            _ = try? ExternalTool.runBlocking(["ip", "netns", "del", self.netnsName])
        }

        func iptablesSave() async throws -> String {
            try await ExternalTool.run(["ip", "netns", "exec", self.netnsName, "iptables-save"]).standardOutput
        }
    }

    static var pluginBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("istio-cni").path
    }

    /// Runs an agent for `node` while `body` runs.
    static func withAgent<T>(_ node: Node, _ body: (NodeAgent) async throws -> T) async throws -> T {
        let configuration = NodeAgent.Configuration(
            redirection: .init(backend: try IptablesBackend.detect()), runDirectory: node.runDirectory
        )
        let agent = try NodeAgent(configuration: configuration, proxy: nil, hostNamespace: try NetworkNamespace.host())
        let server = PluginEventServer(agent: agent, metadata: FileMetadataSource(path: node.metadataPath), runDirectory: node.runDirectory)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            try await server.waitUntilListening()
            defer { group.cancelAll() }
            return try await body(agent)
        }
    }

    @Test("ADD, CHECK, DEL and VERSION at 0.3.1, 0.4.0, 1.0.0 and 1.1.0: prevResult passed through, eligible pods captured, others untouched",
          arguments: ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    func chain(version: String) async throws {
        let node = try await Node()
        let ambient = try await Pod(name: "sleep-\(version)", ambient: true)
        let plain = try await Pod(name: "plain-\(version)", ambient: false)
        try node.writeMetadata([ambient, plain])
        try await Self.withAgent(node) { agent in
            for pod in [ambient, plain] {
                let (previous, ours) = try await node.add(pod, version: version)
                #expect(ours.status == 0, "istio-cni ADD: \(ours.raw) \(ours.log)")
                #expect(ours.output != nil && ours.output == previous, "the result is the previous plugin's result")
                #expect(ours.output?["cniVersion"]?.stringValue == version)
                let rules = try await pod.iptablesSave()
                if pod.ambient {
                    #expect(rules.contains("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"), "\(rules)")
                    #expect(await agent.enrollments[pod.uid]?.state == .enabled)
                    let previousResult = try #require(previous)
                    let address = try #require(try CNIResult(decoding: previousResult, version: version).ips?.first?.ip)
                    #expect(address.hasPrefix("10.88.0."))
                    #expect(await agent.enrollments[pod.uid]?.ips == [address], "the pod IP from prevResult reached the agent")
                } else {
                    #expect(rules.isEmpty, "an ineligible pod is untouched")
                    #expect(await agent.enrollments[pod.uid] == nil)
                }
                let final = Node.config(node.plugins()[1], version: version, previous: ours.output)
                if version >= "0.4.0" {
                    #expect(try await node.exec("istio-cni", command: "CHECK", config: final, pod: pod).status == 0)
                }
                if version == "1.1.0" {
                    #expect(try await node.exec("istio-cni", command: "STATUS", config: final, pod: pod).status == 0)
                }
                // DEL runs the chain in reverse; twice, because DEL must be idempotent.
                for _ in 0..<2 {
                    let ours = try await node.exec("istio-cni", command: "DEL", config: final, pod: pod)
                    #expect(ours.status == 0 && ours.raw.isEmpty, "\(ours.raw)")
                    let bridgeVersion = version == "1.1.0" ? "1.0.0" : version
                    #expect(try await node.exec("bridge", command: "DEL", config: Node.config(node.plugins()[0], version: bridgeVersion, previous: nil), pod: pod).status == 0)
                }
            }
            let versionAnswer = try await node.exec("istio-cni", command: "VERSION", config: .object(["cniVersion": .string(version)]), pod: ambient)
            #expect(versionAnswer.output?["cniVersion"]?.stringValue == version)
            #expect(versionAnswer.output?["supportedVersions"]?.description.contains("\"1.1.0\"") == true)
        }
    }

    @Test("fail closed: with the agent stopped, ADD of an eligible pod is a CNI error JSON with a non-zero exit")
    func agentStopped() async throws {
        let node = try await Node()
        let pod = try await Pod(name: "sleep", ambient: true)
        try node.writeMetadata([pod])
        let (_, ours) = try await node.add(pod, version: "1.0.0")
        #expect(ours.status != 0)
        #expect(ours.output?["code"] == .number(999))
        #expect(ours.output?["msg"]?.stringValue?.hasPrefix("istio-cni cmdAdd failed to contact node Istio CNI agent") == true, "\(ours.raw)")
        #expect(try await pod.iptablesSave().isEmpty)
        // An ineligible pod does not need the agent.
        let plain = try await Pod(name: "plain", ambient: false)
        try node.writeMetadata([pod, plain])
        #expect(try await node.add(plain, version: "1.0.0").ours.status == 0)
    }

    @Test("bad input: invalid JSON, an unknown cniVersion, missing env and a CNI_NETNS that is not a netns, each in the spec's error format")
    func badInput() async throws {
        let node = try await Node()
        let pod = try await Pod(name: "sleep", ambient: true)
        try node.writeMetadata([pod])
        func run(_ stdin: String, env extra: [String] = [], netns: String? = nil) async throws -> (Int32, JSONValue?) {
            let env = [
                "CNI_COMMAND=ADD", "CNI_CONTAINERID=\(pod.containerID)", "CNI_NETNS=\(netns ?? pod.netnsPath)", "CNI_IFNAME=eth0",
                "CNI_PATH=\(node.binDirectory)", "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=sleep",
            ].filter { entry in !extra.contains { entry.hasPrefix($0 + "=") } }
            let result = try await ExternalTool.run(["env", "-i"] + env + [Self.pluginBinary], input: stdin, timeout: .seconds(20))
            return (result.status, try? JSONValue(parsing: Data(result.standardOutput.utf8)))
        }
        let valid = String(decoding: Node.config(node.plugins()[1], version: "1.0.0", previous: nil).jsonData, as: UTF8.self)
        let (invalidStatus, invalid) = try await run("{\"cniVersion\": ")
        #expect(invalidStatus != 0 && invalid?["code"] == .number(6))
        let (_, unknown) = try await run(valid.replacingOccurrences(of: "\"1.0.0\"", with: "\"0.9.9\""))
        #expect(unknown?["code"] == .number(1))
        let (_, missing) = try await run(valid, env: ["CNI_CONTAINERID", "CNI_IFNAME"])
        #expect(missing?["code"] == .number(4))
        #expect(missing?["msg"]?.stringValue?.contains("CNI_CONTAINERID") == true)
        let (_, notNetns) = try await run(valid, netns: "/etc/hostname")
        #expect(notNetns?["code"] == .number(8))
        let badSelector = valid.replacingOccurrences(
            of: "\"ambient_enabled\":true",
            with: #""ambient_enabled":true,"enablement_selectors":[{"podSelector":{"matchExpressions":[{"key":"a","operator":"In","values":[]}]}}]"#
        )
        let (_, selector) = try await run(badSelector)
        #expect(selector?["code"] == .number(7), "a malformed selector is an invalid configuration")
    }
}

/// The `cni-agent` binary: SIGTERM leaves everything in place (an upgrade or restart),
/// `uninstall` removes the host side.
@Suite("cni-agent binary: shutdown vs uninstall", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"))
struct AgentBinaryTests {
    static var agentBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cni-agent").path
    }

    @Test("SIGTERM keeps in-pod rules, host rules, ipsets and the record; a restarted agent keeps them unchanged; uninstall removes host rules and ipsets only")
    func shutdownAndUninstall() async throws {
        let network = try await PodNetwork(tag: "bin")
        let directory = try TemporaryDirectory(prefix: "hbone-agent-bin")
        let run = directory.url.path
        let uid = UUID().uuidString.lowercased()
        try Data("""
        namespaces:
          - name: default
            labels: {istio.io/dataplane-mode: ambient}
        pods:
          - name: sleep
            uid: \(uid)
            netns: \(network.podPath)
            ips: [\(network.podIP)]

        """.utf8).write(to: URL(fileURLWithPath: run + "/pods.yaml"))

        @Sendable func startAgent() async throws -> ExternalPeer {
            try await ExternalPeer(
                ["ip", "netns", "exec", network.node, Self.agentBinary, "run", "--run-dir", run, "--no-proxy"],
                readyLine: "agent ready"
            )
        }
        let state = { () async throws -> (pod: String, host: String, sets: String) in
            (try await network.inPod(["iptables-save"]).standardOutput.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined(separator: "\n"),
             try await network.inNode(["iptables-save", "-t", "nat"]).standardOutput.split(separator: "\n").filter { $0.contains("ISTIO") }.joined(separator: "\n"),
             try await network.inNode(["ipset", "list", "-n"]).standardOutput)
        }

        let first = try await startAgent()
        try await eventually("the pod enrolled") { (try? await network.inPod(["iptables-save"]).standardOutput.contains("ISTIO_OUTPUT")) == true }
        try await eventually("the probe entry") { (try? await network.inNode(["ipset", "list", "istio-inpod-probes-v4"]).standardOutput.contains(uid)) == true }
        let enrolled = try await state()
        #expect(enrolled.host.contains("-A ISTIO_POSTRT -p tcp -m owner --socket-exists -m set --match-set istio-inpod-probes-v4 dst -j SNAT --to-source 169.254.7.127"))
        _ = try await offload { first.stop() }
        #expect(try await state() == enrolled, "SIGTERM is an upgrade: nothing is removed")
        #expect(FileManager.default.fileExists(atPath: run + "/enrollment.json"))

        let second = try await startAgent()
        try await pause(.milliseconds(300))
        #expect(try await state() == enrolled, "a restarted agent re-derives its state and duplicates nothing")
        _ = try await offload { second.stop() }

        let uninstall = try await ExternalTool.run(["ip", "netns", "exec", network.node, Self.agentBinary, "uninstall"])
        #expect(uninstall.status == 0, "\(uninstall.combined)")
        let after = try await state()
        #expect(after.host.isEmpty, "host SNAT rules removed")
        #expect(after.sets.isEmpty, "probe ipsets destroyed")
        #expect(after.pod == enrolled.pod, "in-pod rules of running pods are never removed by the agent's shutdown or uninstall")
    }
}
