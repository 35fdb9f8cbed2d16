import Foundation
import NodeAgent
import Testing

@Suite("Ambient eligibility, selectors and the metadata file")
struct EligibilityTests {
    static let eligibility = AmbientEligibility()

    static func pod(_ labels: [String: String] = [:], namespace: String = "default", annotations: [String: String] = [:], hostNetwork: Bool = false) -> PodInfo {
        PodInfo(name: "p", namespace: namespace, uid: "u", labels: labels, annotations: annotations, hostNetwork: hostNetwork)
    }

    @Test("Istio's default selectors: pod label, namespace label, `none` opt-out")
    func defaults() {
        let ambientNamespace = NamespaceInfo(name: "default", labels: ["istio.io/dataplane-mode": "ambient"])
        let plainNamespace = NamespaceInfo(name: "default")
        #expect(Self.eligibility.decide(Self.pod(["istio.io/dataplane-mode": "ambient"]), namespace: plainNamespace) == .eligible)
        #expect(Self.eligibility.decide(Self.pod(), namespace: ambientNamespace) == .eligible)
        #expect(Self.eligibility.decide(Self.pod(["istio.io/dataplane-mode": "none"]), namespace: ambientNamespace) == .noSelectorMatches)
        #expect(Self.eligibility.decide(Self.pod(), namespace: plainNamespace) == .noSelectorMatches)
        #expect(Self.eligibility.decide(Self.pod(), namespace: nil) == .noSelectorMatches)
    }

    @Test("never: host network, sidecar-injected, excluded namespaces, the node proxy itself")
    func never() {
        let ambient = ["istio.io/dataplane-mode": "ambient"]
        #expect(Self.eligibility.decide(Self.pod(ambient, hostNetwork: true), namespace: nil) == .hostNetwork)
        #expect(Self.eligibility.decide(Self.pod(ambient, annotations: ["sidecar.istio.io/status": "{}"]), namespace: nil) == .sidecarInjected)
        #expect(Self.eligibility.decide(Self.pod(ambient, namespace: "kube-system"), namespace: nil) == .excludedNamespace)
        #expect(Self.eligibility.decide(Self.pod(ambient.merging(["app": "ztunnel"]) { $1 }, namespace: "istio-system"), namespace: nil) == .nodeProxy)
    }

    @Test("matchExpressions: In, NotIn, Exists, DoesNotExist; malformed selectors are refused")
    func expressions() throws {
        let selector = LabelSelector(matchLabels: ["tier": "web"], matchExpressions: [
            .init(key: "env", operator: .in, values: ["prod", "staging"]),
            .init(key: "legacy", operator: .doesNotExist),
            .init(key: "team", operator: .exists),
            .init(key: "mode", operator: .notIn, values: ["none"]),
        ])
        #expect(selector.matches(["tier": "web", "env": "prod", "team": "a"]))
        #expect(!selector.matches(["tier": "web", "env": "dev", "team": "a"]))
        #expect(!selector.matches(["tier": "web", "env": "prod", "team": "a", "legacy": "1"]))
        #expect(!selector.matches(["tier": "web", "env": "prod"]))
        #expect(!selector.matches(["tier": "web", "env": "prod", "team": "a", "mode": "none"]))
        #expect(LabelSelector().matches([:]), "an empty selector matches everything")
        try selector.validate()
        #expect(throws: AgentError.self) { try LabelSelector(matchExpressions: [.init(key: "a", operator: .in, values: [])]).validate() }
        #expect(throws: AgentError.self) { try LabelSelector(matchExpressions: [.init(key: "a", operator: .exists, values: ["x"])]).validate() }
        #expect(throws: AgentError.self) { try LabelSelector(matchExpressions: [.init(key: "", operator: .exists)]).validate() }
        // Decoded from the plugin's JSON config, an unknown operator is a decoding error.
        #expect(throws: (any Error).self) {
            try JSONDecoder().decode(LabelSelector.self, from: Data(#"{"matchExpressions":[{"key":"a","operator":"Near"}]}"#.utf8))
        }
    }

    @Test("the YAML metadata file: pods and namespaces with defaults; malformed YAML is a clear error")
    func metadataFile() throws {
        let state = try FileMetadataSource.parse("""
        namespaces:
          - name: default
            labels: {istio.io/dataplane-mode: ambient}
        pods:
          - name: web-0
            uid: 7f0c1a9e-0000-4000-8000-000000000001
            serviceAccount: web
            netns: /var/run/netns/web-0
            ips: [10.22.0.5]
            labels:
              app: web
          - name: node-exporter
            namespace: monitoring
            uid: u2
            hostNetwork: true
        """)
        #expect(state.namespaces.map(\.name) == ["default"])
        let web = try #require(state.pod(namespace: "default", name: "web-0"))
        #expect(web.serviceAccount == "web" && web.ips == ["10.22.0.5"] && web.labels == ["app": "web"] && web.netns == "/var/run/netns/web-0")
        #expect(state.pod(namespace: "monitoring", name: "node-exporter")?.hostNetwork == true)
        #expect(state.pod(namespace: "monitoring", name: "node-exporter")?.serviceAccount == "default")
        #expect(try FileMetadataSource.parse("") == ClusterState())
        #expect { try FileMetadataSource.parse("pods:\n  - name: x\n    labels: [unclosed") } throws: { error in
            (error as? AgentError)?.kind == .invalidMetadata
        }
        #expect { try FileMetadataSource.parse("pods:\n  - namespace: default\n") } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.kind == .invalidMetadata && error.detail.contains("name")
        }
        #expect { try FileMetadataSource.load("/nonexistent/pods.yaml") } throws: { error in
            (error as? AgentError)?.detail.contains("/nonexistent/pods.yaml") == true
        }
    }

    @Test("the plugin event body: Go field names, base64 masks")
    func pluginEvent() throws {
        let ip = try #require(CNIPluginEvent.ipConfig(cidr: "10.0.0.2/24", gateway: "10.0.0.1", interface: 0))
        #expect(ip.Address.Mask == "////AA==")
        #expect(CNIPluginEvent.ipConfig(cidr: "fd00::2/64", gateway: nil, interface: nil)?.Address.Mask == "//////////8AAAAAAAAAAA==")
        #expect(CNIPluginEvent.ipConfig(cidr: "10.0.0.2", gateway: nil, interface: nil) == nil)
        let event = CNIPluginEvent(netns: "/var/run/netns/cni-1234", podName: "web-0", podNamespace: "default", ips: [ip])
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(event)) as? [String: Any]
        #expect(Set(json?.keys ?? [:].keys) == ["Netns", "PodName", "PodNamespace", "IPs"])
        let decoded = try JSONDecoder().decode(CNIPluginEvent.self, from: Data("""
        {"Netns":"/var/run/netns/cni-1234","PodName":"web-0","PodNamespace":"default",
         "IPs":[{"Interface":0,"Address":{"IP":"10.0.0.2","Mask":"////AA=="},"Gateway":"10.0.0.1"}]}
        """.utf8))
        #expect(decoded == event)
    }
}

@Suite("CNI config installer")
struct CNIConfigInstallerTests {
    @Test("appended last to the primary conflist, replacing an old entry; a bare .conf becomes a conflist; uninstall removes it")
    func install() throws {
        let directory = try FileManager.default.url(for: .itemReplacementDirectory, in: .userDomainMask, appropriateFor: URL(fileURLWithPath: "/tmp"), create: true).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(#"{"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"istio-cni","old":true},{"type":"portmap"}]}"#.utf8)
            .write(to: URL(fileURLWithPath: directory + "/10-kindnet.conflist"))
        try Data(#"{"cniVersion":"0.3.1","name":"later","type":"bridge"}"#.utf8).write(to: URL(fileURLWithPath: directory + "/99-later.conf"))
        let path = try CNIConfigInstaller.install(plugin: ["cni_agent_run_dir": "/var/run/istio-cni", "ambient_enabled": true, "cniVersion": "9.9.9"], into: directory)
        #expect(path.hasSuffix("10-kindnet.conflist"))
        let list = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        let plugins = list?["plugins"] as? [[String: Any]] ?? []
        #expect(plugins.map { $0["type"] as? String } == ["ptp", "portmap", "istio-cni"])
        #expect(plugins.last?["cniVersion"] == nil, "the list's version applies")
        #expect(plugins.last?["old"] == nil)
        try CNIConfigInstaller.uninstall(from: directory)
        let after = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        #expect((after?["plugins"] as? [[String: Any]])?.map { $0["type"] as? String } == ["ptp", "portmap"])

        try FileManager.default.removeItem(atPath: path)
        let converted = try CNIConfigInstaller.install(plugin: [:], into: directory)
        #expect(converted.hasSuffix("99-later.conflist"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/99-later.conf"))
        let conflist = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: converted))) as? [String: Any]
        #expect(conflist?["cniVersion"] as? String == "0.3.1")
        #expect((conflist?["plugins"] as? [[String: Any]])?.map { $0["type"] as? String } == ["bridge", "istio-cni"])
    }
}
