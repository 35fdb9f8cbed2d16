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

    /// Yields the state now and after every change of the file's contents. A file that is
    /// briefly unparsable (half-written) is skipped, not fatal.
    public func updates() -> AsyncThrowingStream<ClusterState, any Error> {
        let path = self.path
        let interval = self.pollInterval
        return AsyncThrowingStream { continuation in
            let task = Task {
                var last: ClusterState?
                var firstError: AgentError?
                while !Task.isCancelled {
                    do throws(AgentError) {
                        let state = try Self.load(path)
                        if state != last {
                            last = state
                            continuation.yield(state)
                        }
                    } catch {
                        if last == nil, firstError == nil { firstError = error }
                    }
                    if last == nil, let firstError {
                        continuation.finish(throwing: firstError)
                        return
                    }
                    do { try await pause(interval) } catch { break }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
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
