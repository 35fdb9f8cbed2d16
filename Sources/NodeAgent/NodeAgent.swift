internal import Foundation
internal import InternetAddress
internal import Netlink
public import Logging
public import Redirect

/// The node agent: istio-cni's enrollment logic (notes §2.2) for the pods of one node.
///
/// - ``addPodToMesh(_:netnsPath:)``, in istio-cni's strict order: open the netns → install
///   in-pod redirection → hand the pod to the node proxy and wait for its ack (no proxy or
///   a NACK leaves the pod `pending`, retryable) → add the pod IPs to the host probe ipset
///   with the UID as comment → record `enabled`.
/// - ``removePodFromMesh(uid:isDelete:)``: UID-checked ipset deletes → remove the in-pod
///   rules if the pod still runs → tell every proxy → forget the record.
/// - ``handle(_:)``: the CNI plugin's `POST /cmdadd` (re-validates eligibility).
/// - ``reconcile(with:)``: a new cluster state from the metadata source: pods that should be
///   enrolled and are not are added (already-running pods, label changes), enrolled pods
///   that should not be (label removed, deleted) are removed.
/// - ``start()``: host probe rules and sets, then recovery from the enrollment record and
///   from what is installed in each pod (``InPodRedirection/apply(in:)`` is idempotent, so
///   a restart never duplicates rules).
///
/// Work on one pod is serialized: an actor's methods interleave at every `await`, and a CNI
/// ADD routinely arrives while the metadata watcher reconciles the same new pod. Each pod's
/// add, removal or reconcile waits for the one before it and then decides on the state it
/// left (two concurrent `iptables-nft-restore --noflush` in one netns fail with "Chain
/// already exists", and the loser's rollback would remove the winner's rules).
public actor NodeAgent {
    /// What the agent does and where.
    public struct Configuration: Sendable {
        /// Which pods are enrolled.
        public var eligibility: AmbientEligibility
        /// The in-pod rules and backend.
        public var redirection: InPodRedirection.Configuration
        /// Host-side probe handling; `nil` to leave the host alone (tests, nodes without kubelet).
        public var hostProbes: HostProbes?
        /// The run directory (`cni_agent_run_dir`): the plugin socket and the enrollment record.
        public var runDirectory: String

        public init(
            redirection: InPodRedirection.Configuration, runDirectory: String = "/var/run/istio-cni",
            eligibility: AmbientEligibility = .init(), hostProbes: HostProbes? = nil
        ) {
            self.redirection = redirection
            self.runDirectory = runDirectory
            self.eligibility = eligibility
            self.hostProbes = hostProbes
        }
    }

    public let configuration: Configuration
    private let proxy: (any WorkloadProxyLink)?
    private let hostNamespace: NetworkNamespace
    private let store: EnrollmentStore
    private var enrolled: [String: EnrollmentStore.Entry]
    private var latest = ClusterState()
    private let logger: Logger
    /// Pods with work in progress, each with the callers waiting for it (FIFO).
    private var busy: [String: [CheckedContinuation<Void, Never>]] = [:]

    /// An agent. `proxy` is `nil` on a node without a node proxy: pods are then enrolled
    /// with rules only (istio-cni would keep them `pending`; this is for rule-only setups).
    public init(
        configuration: Configuration, proxy: (any WorkloadProxyLink)?, hostNamespace: NetworkNamespace,
        logger: Logger = Logger(label: "swift-hbone.agent")
    ) throws(AgentError) {
        try configuration.eligibility.validate()
        self.configuration = configuration
        self.proxy = proxy
        self.hostNamespace = hostNamespace
        self.store = EnrollmentStore(path: configuration.runDirectory + "/enrollment.json")
        self.enrolled = try self.store.load()
        self.logger = logger
    }

    /// The recorded state of every enrolled pod, by UID.
    public var enrollments: [String: EnrollmentStore.Entry] { self.enrolled }

    /// What a node proxy that (re)connects must be told: every enrolled or pending pod with
    /// its identity and netns path (ZDS snapshot).
    public func snapshot() -> [(uid: String, workload: WorkloadIdentity, netns: String?)] {
        self.enrolled.map { uid, entry in
            let serviceAccount = self.latest.pods.first { $0.uid == uid }?.serviceAccount ?? "default"
            return (uid, WorkloadIdentity(name: entry.name, namespace: entry.namespace, serviceAccount: serviceAccount), entry.netns)
        }.sorted { $0.uid < $1.uid }
    }

    // MARK: Startup

    /// Installs the host probe rules and sets, then re-enrolls what the record says is
    /// enrolled (idempotently) and prunes probe entries of pods no longer enrolled.
    public func start(with state: ClusterState) async {
        self.latest = state
        if let probes = self.configuration.hostProbes {
            do {
                try await probes.install(in: self.hostNamespace)
            } catch {
                self.logger.error("host probe rules failed", metadata: ["error": "\(error)"])
            }
        }
        for uid in self.enrolled.keys.sorted() {
            await self.lock(uid)
            defer { self.unlock(uid) }
            guard let entry = self.enrolled[uid] else { continue }
            guard let pod = state.pods.first(where: { $0.uid == uid }) else {
                await self.removeQuietly(uid: uid, isDelete: true)
                continue
            }
            do {
                try await self.enroll(pod, netnsPath: entry.netns)
            } catch {
                self.logger.warning("re-enrollment failed", metadata: ["pod": "\(entry.namespace)/\(entry.name)", "error": "\(error)"])
            }
        }
        if let probes = self.configuration.hostProbes, let entries = try? await probes.entries(in: self.hostNamespace) {
            for entry in entries where !self.enrolled.keys.contains(entry.comment ?? "") {
                _ = try? await probes.remove(podIP: entry.address.description, uid: entry.comment ?? "", in: self.hostNamespace)
            }
        }
        await self.reconcile(with: state)
    }

    // MARK: Plugin events

    /// The CNI plugin's `POST /cmdadd`: finds the pod (the metadata may lag the runtime by a
    /// moment: 10 tries 10 ms apart, as istio-cni), re-checks eligibility, enrolls it with
    /// the netns path from the runtime.
    public func handle(_ event: CNIPluginEvent, metadata: any PodMetadataSource) async throws(AgentError) {
        var pod: PodInfo?
        var namespace: NamespaceInfo?
        for attempt in 0..<10 {
            if let state = try? await metadata.current() {
                self.latest = state
                pod = state.pod(namespace: event.PodNamespace, name: event.PodName)
                namespace = state.namespace(event.PodNamespace)
            }
            if pod != nil { break }
            if attempt < 9 { try? await pause(.milliseconds(10)) }
        }
        guard var pod else {
            throw AgentError(.unknownPod, "pod \(event.PodNamespace)/\(event.PodName) not found")
        }
        guard self.configuration.eligibility.decide(pod, namespace: namespace) == .eligible else {
            throw AgentError(.notEligible, "pod \(event.PodNamespace)/\(event.PodName) unexpectedly not eligible")
        }
        if pod.ips.isEmpty { pod.ips = event.IPs.map(\.Address.IP) }
        try await self.addPodToMesh(pod, netnsPath: event.Netns)
    }

    // MARK: Enrollment

    /// Enrolls `pod`; see the type's documentation for the order.
    public func addPodToMesh(_ pod: PodInfo, netnsPath: String?) async throws(AgentError) {
        await self.lock(pod.uid)
        defer { self.unlock(pod.uid) }
        try await self.enroll(pod, netnsPath: netnsPath)
    }

    private func enroll(_ pod: PodInfo, netnsPath: String?) async throws(AgentError) {
        guard let path = netnsPath ?? pod.netns else {
            throw AgentError(.redirection, "pod \(pod.namespace)/\(pod.name) has no network namespace path")
        }
        let namespace: NetworkNamespace
        do {
            namespace = try NetworkNamespace(path: path)
        } catch {
            throw AgentError(.redirection, "pod \(pod.namespace)/\(pod.name): \(error)")
        }
        do {
            try await InPodRedirection(configuration: self.configuration.redirection).apply(in: namespace)
        } catch {
            throw AgentError(.redirection, "pod \(pod.namespace)/\(pod.name): \(error)")
        }
        // The metadata may not list IPs (the plugin event had them): keep what was recorded.
        let previous = self.enrolled[pod.uid]
        let ips = pod.ips.isEmpty ? previous?.ips ?? [] : pod.ips
        var entry = EnrollmentStore.Entry(namespace: pod.namespace, name: pod.name, state: .pending, netns: path, ips: ips)
        if let proxy = self.proxy {
            do {
                try await proxy.add(
                    uid: pod.uid, workload: WorkloadIdentity(name: pod.name, namespace: pod.namespace, serviceAccount: pod.serviceAccount),
                    namespace: namespace
                )
            } catch {
                try self.record(pod.uid, entry)
                throw error
            }
        }
        if let probes = self.configuration.hostProbes {
            for stale in (previous?.ips ?? []) where !ips.contains(stale) {
                _ = try? await probes.remove(podIP: stale, uid: pod.uid, in: self.hostNamespace)
            }
            for ip in ips {
                do {
                    try await probes.add(podIP: ip, uid: pod.uid, in: self.hostNamespace)
                } catch {
                    try self.record(pod.uid, entry)
                    throw AgentError(.redirection, "probe ipset entry for \(ip): \(error)")
                }
            }
        }
        entry.state = .enabled
        try self.record(pod.uid, entry)
        self.logger.info("pod enrolled", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "uid": "\(pod.uid)", "netns": "\(path)"])
    }

    /// Takes the pod out of the mesh. With `isDelete` the pod is gone and its netns is not
    /// touched; otherwise (label removed) its in-pod rules are removed too.
    public func removePodFromMesh(uid: String, isDelete: Bool) async throws(AgentError) {
        await self.lock(uid)
        defer { self.unlock(uid) }
        try await self.unenroll(uid: uid, isDelete: isDelete)
    }

    private func unenroll(uid: String, isDelete: Bool) async throws(AgentError) {
        guard let entry = self.enrolled[uid] else { return }
        if let probes = self.configuration.hostProbes {
            for ip in entry.ips {
                do {
                    try await probes.remove(podIP: ip, uid: uid, in: self.hostNamespace)
                } catch {
                    throw AgentError(.redirection, "probe ipset entry for \(ip): \(error)")
                }
            }
        }
        if !isDelete, let path = entry.netns, let namespace = try? NetworkNamespace(path: path) {
            do {
                try await InPodRedirection(configuration: self.configuration.redirection).remove(in: namespace)
            } catch {
                throw AgentError(.redirection, "removing rules from \(entry.namespace)/\(entry.name): \(error)")
            }
        }
        if let proxy = self.proxy { try await proxy.delete(uid: uid) }
        self.enrolled[uid] = nil
        try self.store.save(self.enrolled)
        self.logger.info("pod removed", metadata: ["pod": "\(entry.namespace)/\(entry.name)", "uid": "\(uid)"])
    }

    /// Brings enrollment in line with `state` (pods added, deleted, relabelled).
    public func reconcile(with state: ClusterState) async {
        self.latest = state
        let byUID = Dictionary(state.pods.map { ($0.uid, $0) }, uniquingKeysWith: { first, _ in first })
        for uid in self.enrolled.keys.sorted() where byUID[uid] == nil {
            await self.lock(uid)
            defer { self.unlock(uid) }
            await self.removeQuietly(uid: uid, isDelete: true)
        }
        for pod in state.pods {
            await self.lock(pod.uid)
            defer { self.unlock(pod.uid) }
            let wanted = self.configuration.eligibility.decide(pod, namespace: state.namespace(pod.namespace)) == .eligible
            let entry = self.enrolled[pod.uid]
            let ipsChanged = !pod.ips.isEmpty && entry?.ips != pod.ips
            if wanted, entry?.state != .enabled || ipsChanged, let path = entry?.netns ?? pod.netns {
                // A pod whose sandbox does not exist yet is enrolled by its CNI ADD.
                guard entry != nil || FileManager.default.fileExists(atPath: path) else {
                    self.logger.debug("pod has no network namespace yet", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "netns": "\(path)"])
                    continue
                }
                do {
                    try await self.enroll(pod, netnsPath: path)
                } catch {
                    self.logger.warning("enrollment failed", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "error": "\(error)"])
                }
            } else if !wanted, entry != nil {
                await self.removeQuietly(uid: pod.uid, isDelete: false)
            }
        }
    }

    /// Retries every `pending` pod (the node proxy was not connected or refused it), as
    /// istio-cni's informer retries: call it periodically.
    public func retryPending() async {
        for uid in self.enrolled.keys.sorted() {
            await self.lock(uid)
            defer { self.unlock(uid) }
            // Decided under the pod's lock: a concurrent ADD may have completed it meanwhile.
            guard let entry = self.enrolled[uid], entry.state == .pending,
                  let pod = self.latest.pods.first(where: { $0.uid == uid }) else { continue }
            do {
                try await self.enroll(pod, netnsPath: entry.netns)
            } catch {
                self.logger.debug("pending pod still not acknowledged", metadata: ["pod": "\(entry.namespace)/\(entry.name)", "error": "\(error)"])
            }
        }
    }

    /// Follows `source` until cancelled, reconciling on every change.
    public func follow(_ source: any PodMetadataSource) async throws {
        for try await state in source.updates() {
            await self.reconcile(with: state)
        }
    }

    /// Removes a pod whose lock the caller holds, logging a failure.
    private func removeQuietly(uid: String, isDelete: Bool) async {
        do {
            try await self.unenroll(uid: uid, isDelete: isDelete)
        } catch {
            self.logger.warning("removal failed", metadata: ["uid": "\(uid)", "error": "\(error)"])
        }
    }

    /// Waits until no other work on pod `uid` is in progress and marks it busy.
    private func lock(_ uid: String) async {
        guard self.busy[uid] != nil else {
            self.busy[uid] = []
            return
        }
        await withCheckedContinuation { self.busy[uid, default: []].append($0) }
    }

    /// Hands pod `uid` to the next waiter, or marks it idle.
    private func unlock(_ uid: String) {
        guard var waiters = self.busy[uid], !waiters.isEmpty else {
            self.busy[uid] = nil
            return
        }
        let next = waiters.removeFirst()
        self.busy[uid] = waiters
        next.resume()
    }

    private func record(_ uid: String, _ entry: EnrollmentStore.Entry) throws(AgentError) {
        self.enrolled[uid] = entry
        try self.store.save(self.enrolled)
    }
}
