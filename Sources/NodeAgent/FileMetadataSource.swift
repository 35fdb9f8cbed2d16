import Foundation
internal import NIOCore
internal import NIOPosix
internal import Yams

/// Pod and namespace metadata from a YAML file, re-read when it changes: the stand-in for
/// the Kubernetes API server on a one-box mesh (where istio-cni uses informers).
///
/// ```yaml
/// namespaces:
///   - name: default
///     labels: {istio.io/dataplane-mode: ambient}
/// pods:
///   - name: web-0
///     namespace: default
///     uid: 7f0c1a9e-0000-4000-8000-000000000001
///     serviceAccount: web
///     netns: /var/run/netns/web-0
///     ips: [10.22.0.5]
///     labels: {app: web}
///     annotations: {}
///     hostNetwork: false
/// ```
public struct FileMetadataSource: PodMetadataSource {
    /// The YAML file.
    public var path: String
    /// How often the file is checked for changes. Default 1 s.
    public var pollInterval: Duration

    /// A source reading `path`.
    public init(path: String, pollInterval: Duration = .seconds(1)) {
        self.path = path
        self.pollInterval = pollInterval
    }

    /// Parses a document.
    /// - Throws: ``AgentError/Kind/invalidMetadata`` naming the problem.
    public static func parse(_ text: String) throws(AgentError) -> ClusterState {
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return ClusterState() }
        do {
            return try YAMLDecoder().decode(ClusterState.self, from: text)
        } catch {
            throw AgentError(.invalidMetadata, "\(error)")
        }
    }

    public func current() async throws -> ClusterState {
        try Self.load(self.path)
    }

    /// Reads and parses the file once.
    public static func load(_ path: String) throws(AgentError) -> ClusterState {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AgentError(.invalidMetadata, "cannot read \(path): \(error.localizedDescription)")
        }
        do {
            return try Self.parse(text)
        } catch {
            throw AgentError(.invalidMetadata, "\(path): \(error.detail)")
        }
    }

    /// Yields the state now and after every change of the file: its contents, or the file
    /// itself (a new inode or modification time). The second matters because the agent also
    /// changes enrollment on its own (a plugin `ADD`): a pod added and removed again between
    /// two polls leaves the same contents behind, and only the replaced file says that the
    /// agent must reconcile again. While the file is missing or unparsable (being rewritten)
    /// nothing is yielded: an unreadable file must never look like an empty cluster, which
    /// would unenroll every pod.
    public func updates() -> AsyncThrowingStream<ClusterState, any Error> {
        let path = self.path
        let interval = self.pollInterval
        return AsyncThrowingStream { continuation in
            let task = Task {
                var last: (state: ClusterState, version: FileVersion?)?
                while !Task.isCancelled {
                    let version = FileVersion(path: path)
                    if let state = try? Self.load(path), state != last?.state || version != last?.version {
                        last = (state, version)
                        continuation.yield(state)
                    }
                    do { try await pause(interval) } catch { break }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// Which file a path names and when it was last written.
struct FileVersion: Equatable {
    var inode: UInt64
    var modified: Date

    init?(path: String) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value,
              let modified = attributes[.modificationDate] as? Date
        else { return nil }
        self.inode = inode
        self.modified = modified
    }
}

/// Sleeps on a SwiftNIO event-loop timer (decision D10: libdispatch timers were seen to
/// stop firing); cancellation ends it early with `CancellationError`.
func pause(_ duration: Duration) async throws {
    let loop = MultiThreadedEventLoopGroup.singleton.any()
    let promise = loop.makePromise(of: Void.self)
    let nanoseconds = duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    let scheduled = loop.scheduleTask(in: .nanoseconds(nanoseconds)) { promise.succeed() }
    try await withTaskCancellationHandler {
        try await promise.futureResult.get()
    } onCancel: {
        scheduled.cancel()
        promise.fail(CancellationError())
    }
}

extension NodeAgent {
    /// Sleeps on a SwiftNIO timer (decision D10), for the agent's periodic work.
    public static func sleep(_ duration: Duration) async throws {
        try await pause(duration)
    }
}
