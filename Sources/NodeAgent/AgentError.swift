/// Why the node agent refused or failed something.
public struct AgentError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// A label selector breaks the rules of `metav1.LabelSelector`.
        case invalidSelector
        /// The metadata file could not be read or parsed.
        case invalidMetadata
        /// The pod is not known to the metadata source.
        case unknownPod
        /// The pod is not eligible for ambient.
        case notEligible
        /// Installing or removing redirection failed.
        case redirection
        /// No node proxy is connected (ZDS).
        case noProxyConnection
        /// The node proxy answered with a NACK or a protocol error.
        case proxyRejected
        /// A request to the agent was malformed.
        case badRequest
    }

    public var kind: Kind
    public var detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String { "\(self.kind): \(self.detail)" }
}
