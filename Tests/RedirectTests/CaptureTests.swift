import InternetAddress
import Foundation
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Netlink
import Redirect
import Testing

/// Traffic against the installed rules: real TCP connections inside and into a pod
/// namespace, landing where istio-cni's walk-throughs say (notes §2.7).
@Suite("Traffic capture in a pod namespace (real kernel)", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"))
struct CaptureTests {
    /// A pod with redirection applied and the proxy's in-pod listeners (15001, 15006, 15008)
    /// plus the app's 8080, all made with ``PodSockets``.
    final class CapturedPod: Sendable {
        let network: PodNetwork
        let pod: NetworkNamespace
        let node: NetworkNamespace
        let redirection: InPodRedirection
        let outbound: PodSocket
        let inbound: PodSocket
        let hbone: PodSocket
        let app: PodSocket

        init() async throws {
            self.network = try await PodNetwork(tag: "cap")
            self.pod = try NetworkNamespace(path: self.network.podPath)
            self.node = try NetworkNamespace(path: self.network.nodePath)
            self.redirection = InPodRedirection(configuration: .init(backend: try IptablesBackend.detect()))
            try await self.redirection.apply(in: self.pod)
            var proxy = PodSocketOptions()
            proxy.transparent = true
            let any = SocketEndpoint(host: "::", port: 0)!
            // The proxy's listeners are dual-stack on [::], marked, transparent (as ztunnel's in-pod listeners).
            self.outbound = try await PodSockets.listen(on: .init(address: any.address, port: 15001), in: self.pod, options: proxy)
            self.inbound = try await PodSockets.listen(on: .init(address: any.address, port: 15006), in: self.pod, options: proxy)
            self.hbone = try await PodSockets.listen(on: .init(address: any.address, port: 15008), in: self.pod, options: proxy)
            var plain = PodSocketOptions()
            plain.mark = nil
            self.app = try await PodSockets.listen(on: .init(address: any.address, port: 8080), in: self.pod, options: plain)
        }
    }

    /// Accepts one connection on `listener` within `timeout` ms; `nil` if none came.
    static func accept(_ listener: PodSocket, timeout: Int32 = 3000) async throws -> (descriptor: Int32, peer: SocketEndpoint?, local: SocketEndpoint?)? {
        try await offload {
            try listener.withDescriptor { descriptor in
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, timeout) == 1 else { return nil }
                let accepted = Glibc.accept(descriptor, nil, nil)
                guard accepted >= 0 else { return nil }
                return (accepted, PodSockets.peerEndpoint(of: accepted), PodSockets.localEndpoint(of: accepted))
            }
        }
    }

    static var plainOptions: PodSocketOptions {
        var options = PodSocketOptions()
        options.mark = nil
        return options
    }

    @Test("outbound from the app lands on 15001 and SO_ORIGINAL_DST returns the original destination (IPv4 and IPv6)")
    func outbound() async throws {
        let pod = try await CapturedPod()
        for destination in [SocketEndpoint(host: "192.0.2.10", port: 8080)!, SocketEndpoint(host: "2001:db8::10", port: 9443)!] {
            let client = try await PodSockets.connect(to: destination, in: pod.pod, options: Self.plainOptions)
            let accepted = try #require(try await Self.accept(pod.outbound), "the connection to \(destination) reached 15001")
            defer { close(accepted.descriptor) }
            #expect(try PodSockets.originalDestination(ofDescriptor: accepted.descriptor) == destination)
            #expect(accepted.local?.port == 15001)
            #expect(try client.withDescriptor { PodSockets.mark(ofDescriptor: $0) } == 0, "the app's socket is unmarked")
        }
    }

    @Test("inbound plaintext to the pod lands on 15006; inbound to 15008 is not redirected")
    func inbound() async throws {
        let pod = try await CapturedPod()
        for (address, port) in [(pod.network.podIP, UInt16(8080)), (pod.network.podIPv6, 8080)] {
            let destination = SocketEndpoint(host: address, port: port)!
            _ = try await PodSockets.connect(to: destination, in: pod.node, options: Self.plainOptions)
            let accepted = try #require(try await Self.accept(pod.inbound), "\(destination) from the node reached 15006")
            defer { close(accepted.descriptor) }
            #expect(try PodSockets.originalDestination(ofDescriptor: accepted.descriptor) == destination)
            #expect(accepted.local?.port == 15006)
            #expect(try await Self.accept(pod.app, timeout: 100) == nil, "the app saw nothing")
        }
        let hboneDestination = SocketEndpoint(host: pod.network.podIP, port: 15008)!
        _ = try await PodSockets.connect(to: hboneDestination, in: pod.node, options: Self.plainOptions)
        let accepted = try #require(try await Self.accept(pod.hbone), "15008 reached the HBONE listener directly")
        close(accepted.descriptor)
        #expect(accepted.local == hboneDestination)
        #expect(try await Self.accept(pod.inbound, timeout: 100) == nil)
    }

    @Test("a socket marked 0x539 bypasses redirection: it reaches the real server on the node")
    func markedBypass() async throws {
        let pod = try await CapturedPod()
        let server = try await PodSockets.listen(on: SocketEndpoint(host: pod.network.nodeIP, port: 9090)!, in: pod.node, options: Self.plainOptions)
        let marked = try await PodSockets.connect(to: SocketEndpoint(host: pod.network.nodeIP, port: 9090)!, in: pod.pod)
        let descriptor = marked.takeDescriptor()
        defer { close(descriptor) }
        #expect(PodSockets.mark(ofDescriptor: descriptor) == 0x539)
        let accepted = try #require(try await Self.accept(server), "the node's server got the marked connection")
        close(accepted.descriptor)
        #expect(accepted.peer?.address == IPAddress(pod.network.podIP))
        #expect(try await Self.accept(pod.outbound, timeout: 100) == nil, "15001 saw nothing")
    }

    @Test("a kubelet-style probe from the node is SNATed to 169.254.7.127 through the ipset rule and reaches the app directly")
    func hostProbe() async throws {
        let pod = try await CapturedPod()
        let probes = HostProbes(backend: pod.redirection.configuration.backend)
        try await probes.install(in: pod.node)
        try await probes.add(podIP: pod.network.podIP, uid: "0f4c5d3e-1111-4a6b-9c0d-000000000001", in: pod.node)
        try await probes.add(podIP: pod.network.podIPv6, uid: "0f4c5d3e-1111-4a6b-9c0d-000000000001", in: pod.node)

        // The independent `ipset` tool sees what netlink wrote, comment included.
        let listed = try await pod.network.inNode(["ipset", "list", "istio-inpod-probes-v4"]).standardOutput
        #expect(listed.contains("Type: hash:ip"))
        #expect(listed.contains("\(pod.network.podIP) comment \"0f4c5d3e-1111-4a6b-9c0d-000000000001\""), "\(listed)")

        for (address, marker) in [(pod.network.podIP, "169.254.7.127"), (pod.network.podIPv6, "fd16:9254:7127:1337:ffff:ffff:ffff:ffff")] {
            _ = try await PodSockets.connect(to: SocketEndpoint(host: address, port: 8080)!, in: pod.node, options: Self.plainOptions)
            let accepted = try #require(try await Self.accept(pod.app), "the probe to \(address) reached the app")
            close(accepted.descriptor)
            #expect(accepted.peer?.address == IPAddress(marker))
            #expect(try await Self.accept(pod.inbound, timeout: 100) == nil, "not through 15006")
        }

        // A pod IP whose entry belongs to another UID is kept; the owner's delete removes it.
        #expect(try await probes.remove(podIP: pod.network.podIP, uid: "someone-else", in: pod.node) == false)
        #expect(try await probes.remove(podIP: pod.network.podIP, uid: "0f4c5d3e-1111-4a6b-9c0d-000000000001", in: pod.node))
        #expect(try await probes.entries(in: pod.node).map(\.address) == [IPAddress(pod.network.podIPv6)!])

        // Without the entry the probe is plain inbound traffic again.
        _ = try await PodSockets.connect(to: SocketEndpoint(host: pod.network.podIP, port: 8080)!, in: pod.node, options: Self.plainOptions)
        let captured = try #require(try await Self.accept(pod.inbound))
        close(captured.descriptor)

        try await probes.uninstall(in: pod.node)
        #expect(try await pod.network.inNode(["ipset", "list", "-n"]).standardOutput == "")
        #expect(!(try await pod.network.inNode(["iptables-save"]).standardOutput.contains("ISTIO_POSTRT")))
    }

    @Test("spoofed-source delivery: the proxy connects to the app as the remote client, and the replies come back through the 0x111 connmark, the fwmark rule and table 100")
    func spoofedSourceReturnPath() async throws {
        let pod = try await CapturedPod()
        var proxy = PodSocketOptions()
        proxy.transparent = true
        // As ztunnel does for inbound: source = the original client (the node's address), mark 0x539.
        let upstream = try await PodSockets.connect(
            to: SocketEndpoint(host: pod.network.podIP, port: 8080)!, from: SocketEndpoint(host: pod.network.nodeIP, port: 0)!,
            in: pod.pod, options: proxy
        )
        let accepted = try #require(try await Self.accept(pod.app), "the app accepted the proxy's connection")
        defer { close(accepted.descriptor) }
        #expect(accepted.peer?.address == IPAddress(pod.network.nodeIP), "the app sees the client's address, not the proxy's")

        // Bytes both ways: the app's reply to 10.200.0.1 must be routed back to the proxy
        // inside the pod, not out of eth0 to the node.
        let reply: String = try await offload {
            let request = Array("ping".utf8)
            let sent = try upstream.withDescriptor { write($0, request, request.count) }
            guard sent == 4 else { return "proxy write failed" }
            var buffer = [UInt8](repeating: 0, count: 16)
            guard read(accepted.descriptor, &buffer, 16) == 4 else { return "app read failed" }
            let answer = Array("pong".utf8)
            guard write(accepted.descriptor, answer, answer.count) == 4 else { return "app write failed" }
            var entry = pollfd(fd: try upstream.withDescriptor { $0 }, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 3000) == 1 else { return "no reply reached the proxy" }
            let count = try upstream.withDescriptor { read($0, &buffer, 16) }
            return String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self)
        }
        #expect(reply == "pong")
    }

    @Test("DNS: the app's UDP query to a remote resolver lands on the proxy's 15053")
    func dnsCapture() async throws {
        let pod = try await CapturedPod()
        let received: String = try await pod.pod.run {
            let server = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            let client = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(server); close(client) }
            var mark: UInt32 = 0x539
            setsockopt(server, SOL_SOCKET, 36 /* SO_MARK */, &mark, 4)
            func bindAndSend() -> String {
                guard SocketEndpoint(host: "127.0.0.1", port: 15053)!.withSockaddrForTest({ bind(server, $0, $1) }) == 0 else { return "bind" }
                let query = Array("query".utf8)
                let sent = SocketEndpoint(host: "10.96.0.10", port: 53)!.withSockaddrForTest { sendto(client, query, query.count, 0, $0, $1) }
                guard sent == query.count else { return "send" }
                var entry = pollfd(fd: server, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 3000) == 1 else { return "nothing arrived at 15053" }
                var buffer = [UInt8](repeating: 0, count: 64)
                let count = recv(server, &buffer, 64, 0)
                return String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self)
            }
            return bindAndSend()
        }
        #expect(received == "query")
    }

    @Test("pod sockets hand over to SwiftNIO: a bound 15001 listener and a connected marked socket carry bytes")
    func nioHandoff() async throws {
        let pod = try await CapturedPod()
        let group = MultiThreadedEventLoopGroup.singleton
        let received = group.any().makePromise(of: String.self)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.pipeline.addHandler(CollectHandler(promise: received))
            }
            .withBoundSocket(pod.outbound.takeDescriptor()).get()
        defer { server.close(promise: nil) }

        // The app's connection to a remote address is redirected into the NIO listener.
        let app = try await PodSockets.connect(to: SocketEndpoint(host: "198.51.100.7", port: 80)!, in: pod.pod, options: Self.plainOptions)
        let appChannel = try await ClientBootstrap(group: group).withConnectedSocket(app.takeDescriptor()).get()
        try await appChannel.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.0\r\n\r\n")).get()
        try await appChannel.close().get()
        #expect(try await received.futureResult.get() == "GET / HTTP/1.0\r\n\r\n")
    }
}

extension SocketEndpoint {
    /// A `sockaddr` for this endpoint (IPv4 only; enough for the DNS test).
    func withSockaddrForTest<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = self.port.bigEndian
        withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: self.address.bytes) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}

/// Collects a child channel's bytes until EOF.
final class CollectHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<String>
    let buffer = NIOLockedValueBox("")
    init(promise: EventLoopPromise<String>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        self.buffer.withLockedValue { $0 += String(buffer: bytes) }
    }
    func channelInactive(context: ChannelHandlerContext) {
        self.promise.succeed(self.buffer.withLockedValue { $0 })
    }
}
