/// A Kubernetes label selector (`metav1.LabelSelector`): `matchLabels` and
/// `matchExpressions`, all of which must hold. An empty selector matches everything.
public struct LabelSelector: Hashable, Sendable, Codable {
    /// One `matchExpressions` entry.
    public struct Requirement: Hashable, Sendable, Codable {
        /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
        public enum Operator: String, Hashable, Sendable, Codable {
            case `in` = "In"
            case notIn = "NotIn"
            case exists = "Exists"
            case doesNotExist = "DoesNotExist"
        }

        public var key: String
        public var `operator`: Operator
        public var values: [String]?

        public init(key: String, operator: Operator, values: [String]? = nil) {
            self.key = key
            self.operator = `operator`
            self.values = values
        }

        func matches(_ labels: [String: String]) -> Bool {
            switch self.operator {
            case .in: labels[self.key].map { (self.values ?? []).contains($0) } ?? false
            case .notIn: labels[self.key].map { !(self.values ?? []).contains($0) } ?? true
            case .exists: labels[self.key] != nil
            case .doesNotExist: labels[self.key] == nil
            }
        }
    }

    public var matchLabels: [String: String]?
    public var matchExpressions: [Requirement]?

    public init(matchLabels: [String: String]? = nil, matchExpressions: [Requirement]? = nil) {
        self.matchLabels = matchLabels
        self.matchExpressions = matchExpressions
    }

    /// Whether `labels` satisfy every requirement.
    public func matches(_ labels: [String: String]) -> Bool {
        (self.matchLabels ?? [:]).allSatisfy { labels[$0.key] == $0.value }
            && (self.matchExpressions ?? []).allSatisfy { $0.matches(labels) }
    }

    /// Checks the rules `metav1.LabelSelectorAsSelector` enforces: `In`/`NotIn` need values,
    /// `Exists`/`DoesNotExist` must have none, keys are non-empty.
    public func validate() throws(AgentError) {
        for requirement in self.matchExpressions ?? [] {
            guard !requirement.key.isEmpty else { throw AgentError(.invalidSelector, "matchExpressions entry with an empty key") }
            let values = requirement.values ?? []
            switch requirement.operator {
            case .in, .notIn:
                guard !values.isEmpty else {
                    throw AgentError(.invalidSelector, "\(requirement.operator.rawValue) on \(requirement.key) needs at least one value")
                }
            case .exists, .doesNotExist:
                guard values.isEmpty else {
                    throw AgentError(.invalidSelector, "\(requirement.operator.rawValue) on \(requirement.key) must not have values")
                }
            }
        }
    }
}

/// One entry of istio-cni's `enablement_selectors` / `AMBIENT_ENABLEMENT_SELECTOR`: the pod
/// is eligible when its labels match `podSelector` and its namespace's labels match
/// `namespaceSelector` (an absent selector matches everything).
public struct EnablementSelector: Hashable, Sendable, Codable {
    public var podSelector: LabelSelector?
    public var namespaceSelector: LabelSelector?

    public init(podSelector: LabelSelector? = nil, namespaceSelector: LabelSelector? = nil) {
        self.podSelector = podSelector
        self.namespaceSelector = namespaceSelector
    }

    /// Istio's defaults (Helm `values.yaml`): (a) pod label `istio.io/dataplane-mode: ambient`
    /// in any namespace; (b) namespace label `istio.io/dataplane-mode: ambient` and pod label
    /// `istio.io/dataplane-mode` not `none` (the opt-out).
    public static let istioDefaults: [EnablementSelector] = [
        EnablementSelector(podSelector: LabelSelector(matchLabels: ["istio.io/dataplane-mode": "ambient"])),
        EnablementSelector(
            podSelector: LabelSelector(matchExpressions: [.init(key: "istio.io/dataplane-mode", operator: .notIn, values: ["none"])]),
            namespaceSelector: LabelSelector(matchLabels: ["istio.io/dataplane-mode": "ambient"])
        ),
    ]
}
