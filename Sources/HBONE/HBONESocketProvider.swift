internal import InternetAddress
internal import NIOCore
internal import NIOPosix

/// Where and how HBONE makes the TCP connections it opens, for a proxy whose sockets belong
/// somewhere other than its own network namespace: ztunnel's in-pod mode creates every
/// socket inside the pod's namespace, marked 0x539 (`SO_MARK`), and connects to the app
/// from the client's address (`IP_TRANSPARENT`). Without a provider HBONE connects from the
/// process's namespace, unmarked.
///
/// Only the `socket(2)` call has to happen in the pod: a socket belongs to the namespace it
/// was created in for its whole life. So HBONE asks the provider to ``enter`` the namespace
/// around one synchronous socket creation on the connection's event loop (ztunnel switches
/// its runtime's worker thread the same way), and binds, connects and waits on the event
/// loop as usual — no thread or task per connection.
public struct HBONESocketProvider: Sendable {
    /// `SO_MARK` for every socket; `nil` for none.
    public var mark: UInt32?
    /// Whether a source address offered for a connection is bound (with `IP_TRANSPARENT`, so
    /// it may be another host's address, and `IP_BIND_ADDRESS_NO_PORT`, so the port is chosen
    /// by the 4-tuple at `connect`): connections into a pod, to its app, come from the
    /// remote client's address. `false` ignores offered sources.
    public var bindsSource: Bool
    /// Runs `createSocket` — a short, synchronous closure that creates one socket — with the
    /// calling thread inside the namespace where the sockets belong, and switches the
    /// thread back before returning. Throws when the namespace cannot be entered.
    public var enter: @Sendable (_ createSocket: () -> Void) throws -> Void

    /// A provider entering a namespace through `enter`.
    public init(mark: UInt32? = nil, bindsSource: Bool = false, enter: @escaping @Sendable (_ createSocket: () -> Void) throws -> Void) {
        self.mark = mark
        self.bindsSource = bindsSource
        self.enter = enter
    }
}

/// Linux socket option numbers (`<asm-generic/socket.h>`, `<linux/in.h>`, `<linux/in6.h>`).
private enum LinuxSocketOption {
    static let solSocket: Int32 = 1
    static let soMark: Int32 = 36
    static let solIP: Int32 = 0
    static let ipTransparent: Int32 = 19
    static let ipBindAddressNoPort: Int32 = 24
    static let solIPv6: Int32 = 41
    static let ipv6Transparent: Int32 = 75

    static func option(_ level: Int32, _ name: Int32) -> ChannelOptions.Types.SocketOption {
        .init(level: NIOBSDSocket.OptionLevel(rawValue: level), name: NIOBSDSocket.Option(rawValue: name))
    }
}

extension ClientBootstrap {
    /// Connects to `destination` by address — no name resolution: `connect(host:port:)`
    /// would send an IP literal through getaddrinfo on a dispatch queue and Happy Eyeballs
    /// — with the socket made as `sockets` says (in its namespace, marked, from `source`).
    /// `eventLoop` is the bootstrap's (single) event loop.
    func connect(
        to destination: HBONEAddress, from source: IPAddress?, sockets: HBONESocketProvider?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let address: SocketAddress
        do {
            address = try destination.socketAddress
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        guard let sockets else { return self.connect(to: address) }
        var bootstrap = self
        if let mark = sockets.mark {
            bootstrap = bootstrap.channelOption(
                LinuxSocketOption.option(LinuxSocketOption.solSocket, LinuxSocketOption.soMark), value: Int(mark)
            )
        }
        if sockets.bindsSource, let source {
            bootstrap = bootstrap
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelOption(
                    source.isIPv6
                        ? LinuxSocketOption.option(LinuxSocketOption.solIPv6, LinuxSocketOption.ipv6Transparent)
                        : LinuxSocketOption.option(LinuxSocketOption.solIP, LinuxSocketOption.ipTransparent),
                    value: 1
                )
                .channelOption(LinuxSocketOption.option(LinuxSocketOption.solIP, LinuxSocketOption.ipBindAddressNoPort), value: 1)
            do {
                bootstrap = bootstrap.bind(to: try HBONEAddress(ip: source, port: 0).socketAddress)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        var connecting: EventLoopFuture<any Channel>?
        do {
            // NIO creates the socket synchronously inside `connect(to:)`; options, bind and
            // the connect itself follow on the event loop, outside the namespace.
            try sockets.enter { connecting = bootstrap.connect(to: address) }
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return connecting ?? eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
    }
}
