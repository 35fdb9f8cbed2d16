import Foundation
import MeshTestSupport
import NodeAgent
import Redirect
import ServiceLifecycle
import Synchronization
import Testing
@testable import ZDS

/// Records what the proxy side was told; can be made to fail the next starts.
final class RecordingHandler: ZDSWorkloadHandler {
    struct Started: Hashable { var uid: String; var workload: ZDS.WorkloadInfo; var inode: UInt64 }
    let events = Mutex<[String]>([])
    let started = Mutex<[Started]>([])
    let failures = Mutex<Int>(0)

    func start(uid: String, workload: ZDS.WorkloadInfo, namespace: NetworkNamespace) async throws {
        let fail = self.failures.withLock { count -> Bool in
            guard count > 0 else { return false }
            count -= 1
            return true
        }
        if fail {
            self.events.withLock { $0.append("nack \(uid)") }
            throw TestFailure(description: "ports 15001/15006/15008 busy")
        }
        self.started.withLock { $0.append(Started(uid: uid, workload: workload, inode: namespace.inode)) }
        self.events.withLock { $0.append("start \(uid)") }
    }

    func stop(uid: String) async { self.events.withLock { $0.append("stop \(uid)") } }
    func snapshotComplete() async { self.events.withLock { $0.append("snapshot") } }
    func connectionLost() async { self.events.withLock { $0.append("lost") } }

    struct TestFailure: Error, CustomStringConvertible { var description: String }
}

/// ZDS over a real SEQPACKET socket with real network namespace descriptors: our agent
/// side (`ZDSServer`) and proxy side (`ZDSClient`), and each against a raw peer that
/// breaks the protocol.
@Suite("ZDS over a real SEQPACKET socket", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` for real netns descriptors (CI has both)"))
struct ZDSConnectionTests {
    final class Pods: Sendable {
        let names: [String]
        init(count: Int) async throws {
            self.names = (0..<count).map { "hbzds-\(getpid())-\($0)-\(UInt32.random(in: 0..<UInt32.max))" }
            for name in self.names { #expect(try await ExternalTool.run(["ip", "netns", "add", name]).status == 0) }
        }
        deinit { for name in self.names { _ = try? ExternalTool.runBlocking(["ip", "netns", "del", name]) } }
        func path(_ index: Int) -> String { "/var/run/netns/\(self.names[index])" }
        func inode(_ index: Int) throws -> UInt64 { try NetworkNamespace(path: self.path(index)).inode }
    }

    static func socketPath() throws -> (TemporaryDirectory, String) {
        let directory = try TemporaryDirectory(prefix: "hbone-zds")
        return (directory, directory.url.appendingPathComponent("ztunnel.sock").path)
    }

    static let workload = WorkloadIdentity(name: "sleep", namespace: "default", serviceAccount: "sleep")

    /// Runs `services` until `body` returns, then cancels them.
    static func running<T>(_ services: [any Service], _ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for service in services { group.addTask { try await service.run() } }
            defer { group.cancelAll() }
            return try await body()
        }
    }

    @Test("hello, snapshot replay (Add with the real netns fd, Keep without), SnapshotSent; then Add, NACK and retry, Del")
    func conversation() async throws {
        let (directory, path) = try Self.socketPath()
        _ = directory
        let pods = try await Pods(count: 3)
        let snapshot: [ZDSServer.SnapshotEntry] = [
            .init(uid: "uid-0", workload: Self.workload, netnsPath: pods.path(0)),
            .init(uid: "uid-kept", workload: Self.workload, netnsPath: nil),
        ]
        let server = ZDSServer(path: path) { snapshot }
        try server.listen()
        let handler = RecordingHandler()
        let client = ZDSClient(path: path, handler: handler)
        try await Self.running([server, client]) {
            try await eventually("the proxy connected") { server.connectedProxies == 1 }
            #expect(handler.events.withLock { $0 } == ["start uid-0", "snapshot"])
            #expect(handler.started.withLock { $0.first?.inode } == (try pods.inode(0)), "the proxy got the pod's own namespace")

            try await server.add(uid: "uid-1", workload: Self.workload, namespace: NetworkNamespace(path: pods.path(1)))
            #expect(handler.started.withLock { $0.last } == .init(uid: "uid-1", workload: .init(name: "sleep", namespace: "default", serviceAccount: "sleep"), inode: try pods.inode(1)))

            handler.failures.withLock { $0 = 1 }
            await #expect { try await server.add(uid: "uid-2", workload: Self.workload, namespace: NetworkNamespace(path: pods.path(2))) } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.kind == .proxyRejected && error.detail.contains("ports 15001/15006/15008 busy")
            }
            try await server.add(uid: "uid-2", workload: Self.workload, namespace: NetworkNamespace(path: pods.path(2)))
            try await server.delete(uid: "uid-1")
            #expect(handler.events.withLock { $0 } == ["start uid-0", "snapshot", "start uid-1", "nack uid-2", "start uid-2", "stop uid-1"])
        }
    }

    @Test("after an agent restart the proxy reconnects, gets a fresh snapshot, and drains the workloads no longer listed")
    func reconnect() async throws {
        let (directory, path) = try Self.socketPath()
        _ = directory
        let pods = try await Pods(count: 2)
        let handler = RecordingHandler()
        try await Self.running([ZDSClient(path: path, handler: handler)]) {
            let first = ZDSServer(path: path) {
                [.init(uid: "a", workload: Self.workload, netnsPath: pods.path(0)),
                 .init(uid: "b", workload: Self.workload, netnsPath: pods.path(1))]
            }
            try first.listen()
            try await Self.running([first]) {
                try await eventually("the first snapshot") { handler.events.withLock { $0.contains("snapshot") } }
            }
            try await eventually("the proxy noticed the agent went away") { handler.events.withLock { $0.last == "lost" } }
            // "lost" may come twice: a reconnect can land on the old server while it stops.
            let events = handler.events.withLock { $0 }
            #expect(Array(events.prefix(3)) == ["start a", "start b", "snapshot"], "\(events)")
            #expect(events.count >= 4 && events.dropFirst(3).allSatisfy { $0 == "lost" }, "\(events)")
            handler.events.withLock { $0 = [] }
            // The agent restarts knowing only "b" (netns unknown: a Keep).
            let second = ZDSServer(path: path) { [.init(uid: "b", workload: Self.workload, netnsPath: nil)] }
            try second.listen()
            try await Self.running([second]) {
                // While no agent listened, the proxy's reconnect backoff kept doubling (capped
                // at 15 s): on a loaded machine the next attempt can be that far away.
                try await eventually(timeout: .seconds(35), "the second snapshot") { handler.events.withLock { $0.contains("snapshot") } }
                // The agent counts the proxy once the SnapshotSent ack is back, just after the
                // proxy recorded the snapshot.
                try await eventually("the agent counts the reconnected proxy") { second.connectedProxies == 1 }
            }
            // ("lost" may appear again: a reconnect can land on the old server while it stops.)
            #expect(Array(handler.events.withLock { $0 }.filter { $0 != "lost" }.prefix(2)) == ["stop a", "snapshot"], "b kept, a drained")
        }
    }

    @Test("a proxy whose connect landed in a stopping agent's accept queue is reset, never left waiting")
    func queuedConnectionIsReset() async throws {
        let (directory, path) = try Self.socketPath()
        _ = directory
        let listener = try ZDSListener(path: path)
        let early = try ZDSSocket.connect(to: path)
        try early.send(ZDS.encode(hello: .v1))
        listener.close()
        await #expect(throws: ZDSSocket.Failure.closed, "the queued connection is ended, not left to time out") {
            _ = try await offload { try early.receive(timeoutMilliseconds: 5000) }
        }
        #expect(throws: ZDSSocket.Failure.self, "and nothing can connect any more") {
            _ = try ZDSSocket.connect(to: path)
        }
    }

    @Test("the proxy side rejects an fd-less Add and an fd-carrying Del with a NACK and reconnects")
    func proxyRejectsProtocolErrors() async throws {
        let (directory, path) = try Self.socketPath()
        _ = directory
        let pods = try await Pods(count: 1)
        let listener = try ZDSListener(path: path)
        defer { listener.close() }
        let handler = RecordingHandler()
        try await Self.running([ZDSClient(path: path, handler: handler)]) {
            for (request, descriptor) in [(ZDS.Request.add(uid: "x", workload: .init(name: "n", namespace: "ns", serviceAccount: "sa")), nil as String?),
                                          (ZDS.Request.delete(uid: "x"), pods.path(0))] {
                let connection = try await offload { try listener.accept(timeoutMilliseconds: 5000) }
                let hello = try await offload { try connection.receive(timeoutMilliseconds: 5000) }
                #expect(hello.bytes == [0x08, 0x01])
                let namespace = try descriptor.map { try NetworkNamespace(path: $0) }
                try await offload { try connection.send(ZDS.encode(request), descriptor: namespace?.descriptorForTransfer) }
                let answer = try await offload { try connection.receive(timeoutMilliseconds: 5000) }
                let ack = try ZDS.decodeResponse(answer.bytes)
                #expect(!ack.isAck, "NACK: \(ack.error)")
                #expect(ack.error.contains("descriptor"))
                // The proxy then drops the connection and reconnects.
                await #expect(throws: ZDSSocket.Failure.closed) { try await offload { try connection.receive(timeoutMilliseconds: 5000) } }
            }
            #expect(handler.events.withLock { $0 }.filter { $0 != "lost" } == [], "nothing was started or stopped")
            #expect(handler.events.withLock { $0 }.filter { $0 == "lost" }.count >= 2, "each protocol error ended the connection")
        }
    }

    @Test("liveness: a vanished proxy is noticed at the next check; unsolicited data from a proxy is a protocol error")
    func liveness() async throws {
        let (directory, path) = try Self.socketPath()
        _ = directory
        var timeouts = ZDSServer.Timeouts()
        timeouts.liveness = .milliseconds(100)
        let server = ZDSServer(path: path, timeouts: timeouts) { [] }
        try server.listen()
        try await Self.running([server]) {
            try await Self.running([ZDSClient(path: path, handler: RecordingHandler())]) {
                try await eventually("connected") { server.connectedProxies == 1 }
            }
            try await eventually(timeout: .seconds(10), "the closed connection noticed") { server.connectedProxies == 0 }

            // A raw proxy: hello, ACK the (empty) snapshot's SnapshotSent, then talk out of turn.
            let raw = try RawSeqPacket(path: path)
            raw.send(ZDS.encode(hello: .v1))
            #expect(try await offload { raw.receive() } == [0x1a, 0x00], "SnapshotSent")
            raw.send(ZDS.encode(ZDS.Ack()))
            try await eventually("the raw proxy is ready") { server.connectedProxies == 1 }
            raw.send(ZDS.encode(ZDS.Ack()))
            #expect(try await offload { raw.receiveEOF() }, "the agent dropped the proxy that spoke unasked")
            try await eventually("dropped") { server.connectedProxies == 0 }
        }
    }

    @Test("the agent side survives bad proxies: an oversize datagram, a garbage hello, silence; a good proxy still gets served")
    func agentSurvivesBadProxies() async throws {
        let (directory, path) = try Self.socketPath()
        _ = directory
        let pods = try await Pods(count: 1)
        var timeouts = ZDSServer.Timeouts()
        timeouts.hello = 300
        let server = ZDSServer(path: path, timeouts: timeouts) { [.init(uid: "a", workload: Self.workload, netnsPath: pods.path(0))] }
        try server.listen()
        try await Self.running([server]) {
            let oversize = try ZDSSocket.connect(to: path)
            // The kernel carries the 2000-byte datagram whole; the agent's 1024-byte read sees MSG_TRUNC.
            let big = [UInt8](repeating: 0x08, count: 2000)
            #expect(throws: ZDSSocket.Failure.oversize(2000)) { try oversize.send(big) }
            let raw = try RawSeqPacket(path: path)
            raw.send(big)
            #expect(try await offload { raw.receiveEOF() }, "the agent closed the connection that sent an oversize datagram")
            let garbage = try RawSeqPacket(path: path)
            garbage.send([0x0a, 0x05, 0x01])
            #expect(try await offload { garbage.receiveEOF() }, "a truncated hello closes the connection")
            let silent = try RawSeqPacket(path: path)
            #expect(try await offload { silent.receiveEOF() }, "no hello within the deadline closes the connection")

            let handler = RecordingHandler()
            try await Self.running([ZDSClient(path: path, handler: handler)]) {
                try await eventually("the good proxy served") { handler.events.withLock { $0 } == ["start a", "snapshot"] }
            }
        }
    }
}

/// A SEQPACKET peer that sends raw bytes (beyond what ZDSSocket allows) and waits for EOF.
final class RawSeqPacket: Sendable {
    let fd: Int32
    init(path: String) throws {
        self.fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { throw ZDSSocket.Failure.system("connect", errno) }
    }
    deinit { close(self.fd) }
    func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, 0) } }
    /// One datagram (within 3 s).
    func receive() -> [UInt8] {
        var entry = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 3000) == 1 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = recv(self.fd, &buffer, 1024, 0)
        return Array(buffer.prefix(max(count, 0)))
    }
    /// Whether the peer closed within 3 s.
    func receiveEOF() -> Bool {
        var entry = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 3000) == 1 else { return false }
        var buffer = [UInt8](repeating: 0, count: 64)
        return recv(self.fd, &buffer, 64, 0) == 0
    }
}
