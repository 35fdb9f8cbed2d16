public import Redirect

/// How the agent tells the node proxy about enrolled pods: ZDS in production
/// (``ZDSServer``), anything else in tests.
public protocol WorkloadProxyLink: Sendable {
    /// Hands the pod's namespace to the proxy and waits for its acknowledgement.
    /// - Throws: ``AgentError/Kind/noProxyConnection`` or ``AgentError/Kind/proxyRejected``.
    func add(uid: String, workload: WorkloadIdentity, namespace: NetworkNamespace) async throws(AgentError)
    /// Tells every connected proxy the pod is gone.
    func delete(uid: String) async throws(AgentError)
}

/// ZDS `WorkloadInfo`: the pod's name, namespace and service account.
public struct WorkloadIdentity: Hashable, Sendable {
    public var name: String
    public var namespace: String
    public var serviceAccount: String

    public init(name: String, namespace: String, serviceAccount: String) {
        self.name = name
        self.namespace = namespace
        self.serviceAccount = serviceAccount
    }
}
