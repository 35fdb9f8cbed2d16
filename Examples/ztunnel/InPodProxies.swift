import Foundation
import HBONE
import InternetAddress
import Logging
import MeshIdentity
import MeshState
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
    }

    private let store: StoreBox
    private let certificates: CertificateManager
    private let log: AccessLog
    private let logger: Logger
    private var running: [String: Running] = [:]
    private(set) var snapshotReceived = false

    init(store: StoreBox, certificates: CertificateManager, log: AccessLog, logger: Logger) {
        self.store = store
        self.certificates = certificates
        self.log = log
        self.logger = logger
    }

    var pods: [String: Workload] { self.running.mapValues(\.workload) }

    func start(uid: String, workload info: ZDS.WorkloadInfo, namespace: NetworkNamespace) async throws {
        if let existing = self.running[uid], existing.inode == namespace.inode { return }
        self.running.removeValue(forKey: uid)?.task.cancel()
        guard let workload = self.store.current.workload(namespace: info.namespace, name: info.name) else {
            throw ProxyError("workload \(info.namespace)/\(info.name) is not in the mesh config")
        }
        guard let podIP = workload.workloadIPs.first else { throw ProxyError("workload \(info.namespace)/\(info.name) has no IP") }
        let identity = try Self.identity(of: workload)
        var proxy = PodSocketOptions()
        proxy.transparent = true
        let any = IPAddress.v6([UInt8](repeating: 0, count: 16))
        let hboneSocket = try await PodSockets.listen(on: SocketEndpoint(address: any, port: 15008), in: namespace, options: proxy)
        let outboundSocket = try await PodSockets.listen(on: SocketEndpoint(address: any, port: 15001), in: namespace, options: proxy)
        let inboundSocket = try await PodSockets.listen(on: SocketEndpoint(address: any, port: 15006), in: namespace, options: proxy)

        // Connections the proxy opens from inside the pod: marked; to the app also spoofed.
        let outboundSockets = HBONESocketProvider { destination, _ in
            try await PodSockets.connect(to: SocketEndpoint(address: destination.ip, port: destination.port), in: namespace).takeDescriptor()
        }
        let appSockets = HBONESocketProvider { destination, source in
            var options = PodSocketOptions()
            options.transparent = source != nil
            let from = source.map { SocketEndpoint(address: $0, port: 0) }
            return try await PodSockets.connect(to: SocketEndpoint(address: destination.ip, port: destination.port), from: from, in: namespace, options: options).takeDescriptor()
        }
        let client = HBONEClient(certificates: self.certificates, sockets: outboundSockets, logger: self.logger)
        let store = self.store
        let log = self.log

        var serverConfiguration = HBONEServer.Configuration()
        serverConfiguration.listeningSocket = hboneSocket.takeDescriptor()
        serverConfiguration.upstreamSockets = appSockets
        let server = HBONEServer(
            configuration: serverConfiguration, identity: identity, certificates: self.certificates, logger: self.logger,
            onTunnelClosed: { record in log.inbound(record, destination: workload) }
        ) { request in
            guard request.target.ip.unmapped == podIP else {
                return .reject(.badRequest, reason: "CONNECT to \(request.target) is not this pod (\(podIP))")
            }
            let connection = ConnectionAttributes(
                source: PeerIdentity(trustDomain: request.peerIdentity.trustDomain.name, namespace: request.peerIdentity.namespace, serviceAccount: request.peerIdentity.serviceAccount),
                sourceIP: request.peerAddress?.ip.unmapped, destinationIP: podIP, destinationPort: request.target.port
            )
            let (decision, dryRun) = store.current.authorize(connection, to: workload)
            if !dryRun.isEmpty { log.note("dry-run policy matched: \(dryRun)") }
            switch decision {
            case .allow: return .forward(to: HBONEAddress(ip: podIP, port: request.target.port))
            case .explicitlyDenied(let policy): return .reject(.unauthorized, reason: "explicitly denied by: \(policy)")
            case .notAllowed: return .reject(.unauthorized, reason: "allow policy not matched")
            }
        }
        let outbound = TransparentListener(
            listeningSocket: outboundSocket.takeDescriptor(), client: client, sockets: outboundSockets, logger: self.logger,
            onClosed: { record in log.outbound(record, source: workload, store: store.current) }
        ) { connection in
            Self.route(connection, from: workload, identity: identity, store: store.current)
        }
        let inbound = TransparentListener(
            listeningSocket: inboundSocket.takeDescriptor(), client: client, sockets: appSockets, logger: self.logger,
            onClosed: { record in log.plaintextInbound(record, destination: workload) }
        ) { connection in
            let attributes = ConnectionAttributes(
                source: nil, sourceIP: connection.source?.ip, destinationIP: podIP, destinationPort: connection.originalDestination.port
            )
            guard store.current.authorize(attributes, to: workload).decision.isAllowed else {
                return .reject(reason: "plaintext connection denied by policy")
            }
            return .direct(HBONEAddress(ip: podIP, port: connection.originalDestination.port), source: connection.source?.ip)
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
        _ = try await server.listeningAddress
        _ = try await outbound.listeningAddress
        _ = try await inbound.listeningAddress
        self.running[uid] = Running(inode: namespace.inode, task: task, workload: workload)
        self.logger.info("pod proxy started", metadata: ["pod": "\(workload.namespace)/\(workload.name)", "identity": "\(identity)", "ip": "\(podIP)"])
    }

    func stop(uid: String) async {
        guard let running = self.running.removeValue(forKey: uid) else { return }
        running.task.cancel()
        await running.task.value
        self.logger.info("pod proxy stopped", metadata: ["pod": "\(running.workload.namespace)/\(running.workload.name)"])
    }

    func snapshotComplete() async {
        self.snapshotReceived = true
        self.logger.info("ZDS snapshot received", metadata: ["pods": "\(self.running.count)"])
    }

    /// The SPIFFE identity of a workload (the local config's empty trust domain means cluster.local).
    static func identity(of workload: Workload) throws -> SPIFFEID {
        try SPIFFEID(
            trustDomain: TrustDomain(workload.trustDomain.isEmpty ? "cluster.local" : workload.trustDomain),
            namespace: workload.namespace, serviceAccount: workload.serviceAccount.isEmpty ? "default" : workload.serviceAccount
        )
    }

    /// Outbound routing (ztunnel `build_request`).
    static func route(_ connection: TransparentListener.Connection, from source: Workload, identity: SPIFFEID, store: MeshStore) -> TransparentListener.Route {
        var random = SystemRandomNumberGenerator()
        let destination = connection.originalDestination
        do {
            switch try store.resolve(destination: destination.ip.unmapped, port: destination.port, from: source, using: &random) {
            case .hbone(let workload, let address, let targetPort, let service):
                var expected = [try Self.identity(of: workload)]
                if let service, let definition = store.config.services.first(where: { $0.hostname == service }) {
                    expected += definition.subjectAltNames.compactMap { try? SPIFFEID(parsing: $0) }
                }
                return .tunnel(HBONETunnelTarget(
                    source: identity, nextHop: HBONEAddress(ip: address, port: 15008), expectedIdentities: expected,
                    authority: HBONEAddress(ip: address, port: targetPort), sourceIP: source.workloadIPs.first
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
