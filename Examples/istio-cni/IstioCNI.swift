// istio-cni: the CNI plugin a container runtime execs for every pod, chained last after the
// network's main plugin. It passes `prevResult` through unchanged and hands eligible pods
// to the node agent over `<cni_agent_run_dir>/pluginevent.sock` (POST /cmdadd); it fails
// closed, so a pod that should be captured never starts uncaptured.

import CNI
import Foundation
import NodeAgent

/// Istio's plugin keys (`cni/pkg/plugin/plugin.go` `Config`).
struct IstioPluginConfiguration: Decodable {
    var cni_agent_run_dir: String?
    var ambient_enabled: Bool?
    var enablement_selectors: [EnablementSelector]?
    var exclude_namespaces: [String]?
    var pod_namespace: String?
    var plugin_log_level: String?
    /// This project's stand-in for `istio-cni-kubeconfig`: the pod metadata file the node
    /// agent also reads. Default `<cni_agent_run_dir>/pods.yaml`.
    var pod_metadata_file: String?
}

struct IstioCNIPlugin: CNIPlugin {
    var about: String { "istio-cni (swift-hbone): ambient redirection plugin, chained last" }

    func add(_ request: CNIRequest) throws(CNIError) -> JSONValue {
        let config = try request.decode(IstioPluginConfiguration.self)
        let output = try Self.passThrough(request)
        let env = request.environment
        let log = Logger(level: config.plugin_log_level ?? "info", container: env.containerID ?? "")

        guard let podName = env.argument("K8S_POD_NAME"), let podNamespace = env.argument("K8S_POD_NAMESPACE") else {
            log.debug("not a Kubernetes pod (no K8S_POD_NAME/K8S_POD_NAMESPACE in CNI_ARGS): nothing to do")
            return output
        }
        if podName.hasPrefix("istio-cni-node-"), podNamespace == config.pod_namespace {
            return output
        }
        let excluded = Set(config.exclude_namespaces ?? ["kube-system"])
        if excluded.contains(podNamespace) || config.ambient_enabled != true {
            return output
        }
        let runDirectory = config.cni_agent_run_dir ?? "/var/run/istio-cni"
        let eligibility = AmbientEligibility(selectors: config.enablement_selectors ?? EnablementSelector.istioDefaults, excludedNamespaces: excluded)
        do {
            try eligibility.validate()
        } catch {
            throw CNIError(.invalidConfiguration, "invalid enablement_selectors", details: error.detail)
        }
        let state: ClusterState
        do {
            state = try FileMetadataSource.load(config.pod_metadata_file ?? runDirectory + "/pods.yaml")
        } catch {
            throw CNIError(.internal, "istio-cni cmdAdd failed to read pod metadata", details: error.detail)
        }
        guard let pod = state.pod(namespace: podNamespace, name: podName) else {
            log.info("pod \(podNamespace)/\(podName) not in the metadata: treated as not ambient")
            return output
        }
        let decision = eligibility.decide(pod, namespace: state.namespace(podNamespace))
        guard decision == .eligible else {
            log.debug("pod \(podNamespace)/\(podName) not eligible: \(decision)")
            return output
        }
        guard let netns = env.networkNamespace, Self.isNetworkNamespace(netns) else {
            throw CNIError(.invalidNetworkNamespace, "CNI_NETNS \"\(env.networkNamespace ?? "")\" is not a network namespace")
        }
        let ips = (try request.previousResult()?.ips ?? []).compactMap {
            CNIPluginEvent.ipConfig(cidr: $0.address, gateway: $0.gateway, interface: $0.interface)
        }
        let event = CNIPluginEvent(netns: netns, podName: podName, podNamespace: podNamespace, ips: ips)
        let socket = PluginEventSocket.path(in: runDirectory)
        let response: PluginEventClient.Response
        do {
            response = try PluginEventClient.post(event, socketPath: socket)
        } catch {
            throw CNIError(.internal, "istio-cni cmdAdd failed to contact node Istio CNI agent: \(error.detail)")
        }
        guard response.status == 200 else {
            throw CNIError(.internal, "istio-cni cmdAdd failed to contact node Istio CNI agent: status \(response.status): \(response.body)")
        }
        log.info("pod \(podNamespace)/\(podName) handed to the node agent")
        return output
    }

    /// DEL: cleanup is the agent's job (it watches pod deletion); success, idempotently.
    func delete(_ request: CNIRequest) throws(CNIError) {}
    /// CHECK: nothing of ours lives in the pod's interface configuration.
    func check(_ request: CNIRequest) throws(CNIError) {}

    /// `prevResult` as given when its version is the request's (a normal chain), otherwise
    /// converted; an empty result at the request's version when there is none.
    static func passThrough(_ request: CNIRequest) throws(CNIError) -> JSONValue {
        guard let raw = request.configuration["prevResult"], raw != .null else {
            return try CNIResult(cniVersion: request.cniVersion).json(version: request.cniVersion)
        }
        let result = try CNIResult(decoding: raw, version: request.cniVersion)
        if raw["cniVersion"]?.stringValue == request.cniVersion { return raw }
        return try result.json(version: request.cniVersion)
    }

    /// `NS_GET_NSTYPE` on the path answers `CLONE_NEWNET` only for a network namespace.
    static func isNetworkNamespace(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return ioctl(fd, 0xb703) == 0x4000_0000
    }
}

/// Plugin logs go to stderr only (stdout is the result).
struct Logger {
    let verbose: Bool
    let container: String
    init(level: String, container: String) {
        self.verbose = level == "debug"
        self.container = container
    }
    func info(_ message: String) { self.write("info", message) }
    func debug(_ message: String) { if self.verbose { self.write("debug", message) } }
    private func write(_ level: String, _ message: String) {
        FileHandle.standardError.write(Data("istio-cni \(level) container=\(self.container): \(message)\n".utf8))
    }
}

@main
enum Main {
    static func main() {
        CNISkeleton.main(IstioCNIPlugin())
    }
}
