import Foundation
import HBONE
import InternetAddress
import Logging
import MeshIdentity
import MeshState
import NodeAgent
import Redirect
import Synchronization
import ZDS

/// The node proxy's pods: for every workload the node agent hands over (ZDS Add with the
/// netns fd), three listeners inside that pod's network namespace, every socket marked
/// 0x539 so the pod's rules leave the proxy's own traffic alone:
///
/// - 15008 HBONE (inbound mTLS): the `CONNECT` authority must be this pod's address (400
///   otherwise), L4 authorization (401 on deny), then a connection to the app from the
///   client's address (`IP_TRANSPARENT`), then 200.
/// - 15001 outbound: `SO_ORIGINAL_DST` → the mesh store → HBONE to `podIP:15008` with
///   authority `podIP:targetPort` as the pod's own identity, plain TCP to a non-mesh
///   workload, passthrough to anything unknown.
/// - 15006 inbound plaintext: authorization without identity, then to the app.
actor InPodProxies: ZDSWorkloadHandler {
    struct Running {
        let inode: UInt64
        let task: Task<Void, Never>
        let workload: Workload
        let server: HBONEServer
        let inbound: TransparentListener
    }

    private let store: StoreBox
    private let certificates: CertificateManager
    private let log: AccessLog
    private let metrics: Metrics
    /// The mesh trust domain for workloads without one.
    let trustDomain: String
    /// The pods' HBONE clients' settings (pooling).
    private let hbone: HBONEConfiguration
    private let logger: Logger
    private var running: [String: Running] = [:]
    private(set) var snapshotReceived = false

    init(store: StoreBox, certificates: CertificateManager, log: AccessLog, metrics: Metrics, trustDomain: String, hbone: HBONEConfiguration, logger: Logger) {
        self.trustDomain = trustDomain
        self.hbone = hbone
        self.store = store
        self.certificates = certificates
        self.log = log
        self.metrics = metrics
        self.logger = logger
    }

    var pods: [String: Workload] { self.running.mapValues(\.workload) }

    /// Per-pod proxy state for `/config_dump`.
    struct PodState: Sendable {
        var uid: String
        var workload: String
        var inode: UInt64
    }

    func dump() -> [PodState] {
        self.running.sorted { $0.key < $1.key }.map { uid, running in
            PodState(uid: uid, workload: "\(running.workload.namespace)/\(running.workload.name)", inode: running.inode)
        }
    }

    func start(uid: String, workload info: ZDS.WorkloadInfo, namespace: NetworkNamespace) async throws {
        if let existing = self.running[uid], existing.inode == namespace.inode { return }
        self.running.removeValue(forKey: uid)?.task.cancel()
        guard let workload = self.store.current.workload(namespace: info.namespace, name: info.name) else {
            throw ProxyError("workload \(info.namespace)/\(info.name) is not in the mesh config")
        }
        guard !workload.workloadIPs.isEmpty else { throw ProxyError("workload \(info.namespace)/\(info.name) has no IP") }
        let trustDomain = self.trustDomain
        let identity = try Self.identity(of: workload, trustDomain: trustDomain)
        var proxy = PodSocketOptions()
        proxy.transparent = true
        let any = IPAddress.v6([UInt8](repeating: 0, count: 16))
        let hboneSocket = try await PodSockets.listen(on: SocketEndpoint(address: any, port: 15008), in: namespace, options: proxy)
        let outboundSocket = try await PodSockets.listen(on: SocketEndpoint(address: any, port: 15001), in: namespace, options: proxy)
        let inboundSocket = try await PodSockets.listen(on: SocketEndpoint(address: any, port: 15006), in: namespace, options: proxy)

        // Connections the proxy opens from inside the pod: marked; to the app also spoofed.
        let mark = PodSocketOptions().mark
        let outboundSockets = HBONESocketProvider(mark: mark) { createSocket in try namespace.enterBriefly(createSocket) }
        let appSockets = HBONESocketProvider(mark: mark, bindsSource: true) { createSocket in try namespace.enterBriefly(createSocket) }
        let client = HBONEClient(certificates: self.certificates, configuration: self.hbone, sockets: outboundSockets, logger: self.logger)
        let store = self.store
        let log = self.log
        let metrics = self.metrics
        let destinationPrincipal = identity.uri
        @Sendable func inboundLabels(_ request: HBONEInboundRequest?, denied: Bool) -> Metrics.Labels {
            Metrics.Labels(
                reporter: "destination", source: request?.peerAddress.flatMap { store.current.workload(at: $0.ip.unmapped) },
                sourcePrincipal: request?.peerIdentity.uri, destination: workload, destinationService: nil,
                destinationPrincipal: destinationPrincipal, responseFlags: denied ? "DENY" : "-", mutualTLS: true
            )
        }
        @Sendable func outboundLabels(_ connection: TransparentListener.Connection, route: String) -> Metrics.Labels {
            let current = store.current
            let address = connection.originalDestination.ip.unmapped
            let destination = current.workload(at: address)
            return Metrics.Labels(
                reporter: "source", source: workload, sourcePrincipal: route == "tunnel" ? identity.uri : nil,
                destination: destination, destinationService: current.service(vip: address, clientNamespace: workload.namespace),
                destinationPrincipal: destination.flatMap { try? Self.identity(of: $0, trustDomain: trustDomain).uri }, mutualTLS: route == "tunnel"
            )
        }

        var serverConfiguration = HBONEServer.Configuration()
        serverConfiguration.listeningSocket = hboneSocket.takeDescriptor()
        serverConfiguration.upstreamSockets = appSockets
        let server = HBONEServer(
            configuration: serverConfiguration, identity: identity, certificates: self.certificates, logger: self.logger,
            onTunnelClosed: { record in
                log.inbound(record, destination: workload)
                metrics.closed(inboundLabels(record.request, denied: record.status.code == 401), received: record.bytes.received, sent: record.bytes.sent, failed: record.status.code != 200)
            }
        ) { request in
            let target = request.target.ip.unmapped
            guard workload.workloadIPs.contains(target) else {
                return .reject(.badRequest, reason: "CONNECT to \(request.target) is not this pod (\(workload.workloadIPs.map(\.description).joined(separator: ", ")))")
            }
            let connection = ConnectionAttributes(
                source: PeerIdentity(trustDomain: request.peerIdentity.trustDomain.name, namespace: request.peerIdentity.namespace, serviceAccount: request.peerIdentity.serviceAccount),
                sourceIP: request.peerAddress?.ip.unmapped, destinationIP: target, destinationPort: request.target.port
            )
            // The workload as the current config has it (a reload may have changed its policies).
            let current = store.current.workload(uid: workload.uid) ?? workload
            let (decision, dryRun) = store.current.authorize(connection, to: current)
            if !dryRun.isEmpty { log.note("dry-run policy matched: \(dryRun)") }
            metrics.opened(inboundLabels(request, denied: !decision.isAllowed))
            switch decision {
            case .allow: return .forward(to: HBONEAddress(ip: target, port: request.target.port))
            case .explicitlyDenied(let policy): return .reject(.unauthorized, reason: "explicitly denied by: \(policy)")
            case .notAllowed: return .reject(.unauthorized, reason: "allow policy not matched")
            }
        }
        let outbound = TransparentListener(
            listeningSocket: outboundSocket.takeDescriptor(), client: client, sockets: outboundSockets, logger: self.logger,
            onClosed: { record in
                log.outbound(record, source: workload, store: store.current)
                metrics.closed(outboundLabels(record.connection, route: record.route), received: record.bytes.sent, sent: record.bytes.received, failed: record.error != nil)
            }
        ) { connection in
            let route = Self.route(connection, from: workload, identity: identity, trustDomain: trustDomain, store: store.current)
            let kind: String
            switch route {
            case .tunnel: kind = "tunnel"
            case .direct: kind = "direct"
            case .reject: kind = "reject"
            }
            metrics.opened(outboundLabels(connection, route: kind))
            return route
        }
        let inbound = TransparentListener(
            listeningSocket: inboundSocket.takeDescriptor(), client: client, sockets: appSockets, logger: self.logger,
            onClosed: { record in
                log.plaintextInbound(record, destination: workload)
                let labels = Metrics.Labels(
                    reporter: "destination", source: record.connection.source.flatMap { store.current.workload(at: $0.ip) }, sourcePrincipal: nil,
                    destination: workload, destinationService: nil, destinationPrincipal: destinationPrincipal,
                    responseFlags: record.route == "reject" ? "DENY" : "-", mutualTLS: false
                )
                metrics.closed(labels, received: record.bytes.sent, sent: record.bytes.received, failed: record.error != nil)
            }
        ) { connection in
            let current = store.current
            let allowed = Self.plaintextAllowed(connection, to: current.workload(uid: workload.uid) ?? workload, store: current)
            metrics.opened(Metrics.Labels(
                reporter: "destination", source: connection.source.flatMap { store.current.workload(at: $0.ip) }, sourcePrincipal: nil,
                destination: workload, destinationService: nil, destinationPrincipal: destinationPrincipal,
                responseFlags: allowed ? "-" : "DENY", mutualTLS: false
            ))
            guard allowed else {
                return .reject(reason: "plaintext connection denied by policy")
            }
            return .direct(HBONEAddress(ip: Self.localAddress(connection, of: workload), port: connection.originalDestination.port), source: connection.source?.ip)
        }
        let logger = self.logger
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { do { try await server.run() } catch { logger.error("15008 failed", metadata: ["error": "\(error)"]) } }
                group.addTask { do { try await outbound.run() } catch { logger.error("15001 failed", metadata: ["error": "\(error)"]) } }
                group.addTask { do { try await inbound.run() } catch { logger.error("15006 failed", metadata: ["error": "\(error)"]) } }
            }
            await client.closeAllConnections()
        }
        do {
            _ = try await server.listeningAddress
            _ = try await outbound.listeningAddress
            _ = try await inbound.listeningAddress
        } catch {
            // A listener that could not start: stop the others so a retried Add can bind again.
            task.cancel()
            await task.value
            throw error
        }
        self.running[uid] = Running(inode: namespace.inode, task: task, workload: workload, server: server, inbound: inbound)
        // ztunnel prefetches the certificate of every local workload (`cert_fetcher.rs`).
        await self.certificates.prefetch(identity)
        self.logger.info("pod proxy started", metadata: ["pod": "\(workload.namespace)/\(workload.name)", "identity": "\(identity)", "ips": "\(workload.workloadIPs.map(\.description).joined(separator: ","))"])
    }

    /// The pod address a redirected inbound connection was for: the original destination when
    /// it is one of the pod's addresses (a dual-stack pod has several), else the first.
    static func localAddress(_ connection: TransparentListener.Connection, of workload: Workload) -> IPAddress {
        let target = connection.originalDestination.ip.unmapped
        return workload.workloadIPs.contains(target) ? target : (workload.workloadIPs.first ?? target)
    }

    /// L4 authorization of a plaintext (15006) connection: no identity, only addresses and port.
    static func plaintextAllowed(_ connection: TransparentListener.Connection, to workload: Workload, store: MeshStore) -> Bool {
        let attributes = ConnectionAttributes(
            source: nil, sourceIP: connection.source?.ip.unmapped, destinationIP: Self.localAddress(connection, of: workload),
            destinationPort: connection.originalDestination.port
        )
        return store.authorize(attributes, to: workload).decision.isAllowed
    }

    /// Re-checks every live inbound connection, HBONE (15008) and plaintext (15006), against
    /// the current policies and closes the ones now denied (ztunnel: "connection closed due to
    /// policy change").
    func reevaluate() {
        let store = self.store.current
        for running in self.running.values {
            let workload = store.workload(uid: running.workload.uid) ?? running.workload
            let closed = running.server.closeTunnels { request in
                let connection = ConnectionAttributes(
                    source: PeerIdentity(trustDomain: request.peerIdentity.trustDomain.name, namespace: request.peerIdentity.namespace, serviceAccount: request.peerIdentity.serviceAccount),
                    sourceIP: request.peerAddress?.ip.unmapped, destinationIP: request.target.ip.unmapped, destinationPort: request.target.port
                )
                return !store.authorize(connection, to: workload).decision.isAllowed
            } + running.inbound.closeConnections { connection in
                !Self.plaintextAllowed(connection, to: workload, store: store)
            }
            if closed > 0 {
                self.log.note("connection closed due to policy change: \(closed) to \(workload.namespace)/\(workload.name)")
            }
        }
    }

    func stop(uid: String) async {
        guard let running = self.running.removeValue(forKey: uid) else { return }
        running.task.cancel()
        await running.task.value
        // The last pod of an identity is gone: stop rotating its certificate (ztunnel forgets it).
        if let identity = try? Self.identity(of: running.workload, trustDomain: self.trustDomain),
           !self.running.values.contains(where: { (try? Self.identity(of: $0.workload, trustDomain: self.trustDomain)) == identity }) {
            await self.certificates.forget(identity)
        }
        self.logger.info("pod proxy stopped", metadata: ["pod": "\(running.workload.namespace)/\(running.workload.name)"])
    }

    func connectionLost() async {
        self.snapshotReceived = false
        self.logger.warning("ZDS connection to the node agent lost; not ready until its snapshot is replayed")
    }

    func snapshotComplete() async {
        self.snapshotReceived = true
        self.logger.info("ZDS snapshot received", metadata: ["pods": "\(self.running.count)"])
    }

    /// The SPIFFE identity of a workload; `trustDomain` (the mesh's, `--trust-domain`) applies
    /// when the config leaves the workload's empty.
    static func identity(of workload: Workload, trustDomain: String) throws -> SPIFFEID {
        try SPIFFEID(
            trustDomain: TrustDomain(workload.trustDomain.isEmpty ? trustDomain : workload.trustDomain),
            namespace: workload.namespace, serviceAccount: workload.serviceAccount.isEmpty ? "default" : workload.serviceAccount
        )
    }

    /// Outbound routing (ztunnel `build_request`).
    static func route(_ connection: TransparentListener.Connection, from source: Workload, identity: SPIFFEID, trustDomain: String, store: MeshStore) -> TransparentListener.Route {
        var random = SystemRandomNumberGenerator()
        let destination = connection.originalDestination
        do {
            switch try store.resolve(destination: destination.ip.unmapped, port: destination.port, from: source, using: &random) {
            case .hbone(let workload, let address, let targetPort, let service):
                var expected = [try Self.identity(of: workload, trustDomain: trustDomain)]
                if let service, let definition = store.config.services.first(where: { $0.hostname == service }) {
                    expected += definition.subjectAltNames.compactMap { try? SPIFFEID(parsing: $0) }
                }
                return .tunnel(HBONETunnelTarget(
                    source: identity, nextHop: HBONEAddress(ip: address, port: 15008), expectedIdentities: expected,
                    authority: HBONEAddress(ip: address, port: targetPort), sourceIP: connection.source?.ip ?? source.workloadIPs.first
                ))
            case .tcp(_, let address, let port, _):
                return .direct(HBONEAddress(ip: address, port: port), source: nil)
            case .passthrough(let address, let port):
                return .direct(HBONEAddress(ip: address, port: port), source: nil)
            }
        } catch {
            return .reject(reason: "\(error)")
        }
    }
}

struct ProxyError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The current mesh store, replaced on reload; connections keep the one they started with.
final class StoreBox: Sendable {
    private let store: Mutex<MeshStore>
    init(_ store: MeshStore) { self.store = Mutex(store) }
    var current: MeshStore { self.store.withLock { $0 } }
    func replace(_ store: MeshStore) { self.store.withLock { $0 = store } }
}
