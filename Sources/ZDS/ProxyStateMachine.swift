/// The node proxy's side of a ZDS connection as a value type that turns each received
/// request into an action (ztunnel `src/inpod/statemanager.rs`, notes §3.3):
///
/// - Before `SnapshotSent`: Add and Keep mark the UID present; Del unmarks it.
/// - `SnapshotSent`: every running workload whose UID was not marked is drained; after it,
///   a second `SnapshotSent` or a `Keep` is a protocol error.
/// - Add must carry exactly one netns descriptor; every other message must carry none.
/// - A new connection starts the bookkeeping over (``connectionStarted()``).
public struct ZDSProxyStateMachine: Sendable {
    /// What the proxy should do.
    public enum Action: Hashable, Sendable {
        /// Start (or keep, if the same netns) the in-pod proxy for `uid`.
        case start(uid: String, workload: ZDS.WorkloadInfo)
        /// Nothing to start: the workload is known and stays.
        case keep(uid: String)
        /// Stop the in-pod proxy for `uid`.
        case stop(uid: String)
        /// The snapshot is complete: stop these workloads, which the agent no longer lists.
        case snapshotComplete(drain: [String])
        /// The message breaks the protocol: NACK it and reconnect.
        case protocolError(String)
    }

    /// UIDs with a running in-pod proxy.
    public private(set) var running: Set<String> = []
    private var present: Set<String> = []
    private var snapshotReceived = false

    public init() {}

    /// Whether the current connection's snapshot has been received.
    public var isSnapshotComplete: Bool { self.snapshotReceived }

    /// A new connection: the agent will replay its snapshot.
    public mutating func connectionStarted() {
        self.present = []
        self.snapshotReceived = false
    }

    /// The action for `request`, received with `descriptorCount` descriptors.
    public mutating func received(_ request: ZDS.Request, descriptorCount: Int) -> Action {
        if request.carriesNamespace, descriptorCount != 1 {
            return .protocolError("AddWorkload must carry exactly one netns descriptor, got \(descriptorCount)")
        }
        if !request.carriesNamespace, descriptorCount != 0 {
            return .protocolError("only AddWorkload may carry a descriptor")
        }
        switch request {
        case .add(let uid, let workload):
            if !self.snapshotReceived { self.present.insert(uid) }
            return .start(uid: uid, workload: workload)
        case .keep(let uid):
            guard !self.snapshotReceived else { return .protocolError("KeepWorkload after SnapshotSent") }
            self.present.insert(uid)
            return .keep(uid: uid)
        case .delete(let uid):
            self.present.remove(uid)
            return .stop(uid: uid)
        case .snapshotSent:
            guard !self.snapshotReceived else { return .protocolError("a second SnapshotSent") }
            self.snapshotReceived = true
            let stale = self.running.subtracting(self.present).sorted()
            return .snapshotComplete(drain: stale)
        }
    }

    /// Records the outcome of a `.start`.
    public mutating func started(_ uid: String) { self.running.insert(uid) }
    /// Records the outcome of a `.stop` or a drain.
    public mutating func stopped(_ uid: String) { self.running.remove(uid) }
}
