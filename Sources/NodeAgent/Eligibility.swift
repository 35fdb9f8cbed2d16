/// istio-cni's ambient eligibility (`cni/pkg/util/enablement_selector.go`, notes §1.5).
public struct AmbientEligibility: Hashable, Sendable {
    /// `enablement_selectors`: any entry matching makes a pod eligible.
    public var selectors: [EnablementSelector]
    /// `exclude_namespaces` (Helm default `["kube-system"]`).
    public var excludedNamespaces: Set<String>
    /// The namespace the node proxy runs in (`SYSTEM_NAMESPACE`); its `app=ztunnel` pods are never enrolled.
    public var systemNamespace: String

    /// Istio's defaults.
    public init(
        selectors: [EnablementSelector] = EnablementSelector.istioDefaults, excludedNamespaces: Set<String> = ["kube-system"],
        systemNamespace: String = "istio-system"
    ) {
        self.selectors = selectors
        self.excludedNamespaces = excludedNamespaces
        self.systemNamespace = systemNamespace
    }

    /// Why a pod is or is not eligible.
    public enum Decision: Hashable, Sendable {
        case eligible
        case hostNetwork
        case sidecarInjected
        case excludedNamespace
        case nodeProxy
        case noSelectorMatches
    }

    /// The decision for `pod` in `namespace` (labels of a missing namespace count as empty).
    public func decide(_ pod: PodInfo, namespace: NamespaceInfo?) -> Decision {
        if pod.hostNetwork { return .hostNetwork }
        if pod.annotations["sidecar.istio.io/status"] != nil { return .sidecarInjected }
        if self.excludedNamespaces.contains(pod.namespace) { return .excludedNamespace }
        if pod.namespace == self.systemNamespace, pod.labels["app"] == "ztunnel" { return .nodeProxy }
        let namespaceLabels = namespace?.labels ?? [:]
        let matches = self.selectors.contains { selector in
            (selector.podSelector?.matches(pod.labels) ?? true) && (selector.namespaceSelector?.matches(namespaceLabels) ?? true)
        }
        return matches ? .eligible : .noSelectorMatches
    }

    /// Validates every selector.
    public func validate() throws(AgentError) {
        for selector in self.selectors {
            try selector.podSelector?.validate()
            try selector.namespaceSelector?.validate()
        }
    }
}
