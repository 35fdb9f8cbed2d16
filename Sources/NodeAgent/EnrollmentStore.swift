import Foundation

/// The agent's record of enrolled pods: the `ambient.istio.io/redirection` annotation
/// istio-cni writes on each pod (`enabled`/`pending`), kept in a JSON file in the run
/// directory on a one-box mesh. Written atomically; re-read after a restart.
public struct EnrollmentStore: Sendable {
    /// One enrolled pod.
    public struct Entry: Hashable, Sendable, Codable {
        public var namespace: String
        public var name: String
        public var state: RedirectionState
        public var netns: String?
        public var ips: [String]
    }

    /// The file.
    public var path: String

    public init(path: String) {
        self.path = path
    }

    /// Every entry by pod UID; empty when the file does not exist.
    public func load() throws(AgentError) -> [String: Entry] {
        guard FileManager.default.fileExists(atPath: self.path) else { return [:] }
        do {
            return try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: URL(fileURLWithPath: self.path)))
        } catch {
            throw AgentError(.invalidMetadata, "enrollment state \(self.path): \(error)")
        }
    }

    /// Replaces the file with `entries`.
    public func save(_ entries: [String: Entry]) throws(AgentError) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(entries).write(to: URL(fileURLWithPath: self.path), options: .atomic)
        } catch {
            throw AgentError(.invalidMetadata, "writing enrollment state \(self.path): \(error)")
        }
    }
}
