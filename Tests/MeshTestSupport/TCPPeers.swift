#if canImport(Glibc)
internal import Glibc
#endif
internal import Foundation
internal import Synchronization

/// A connected blocking socket (POSIX, no NIO), for peers that must not share code or
/// threads with the stack under test.
public final class BlockingSocket: Sendable {
    /// The file descriptor.
    public let fd: Int32

    init(fd: Int32) {
        self.fd = fd
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Connects to 127.0.0.1:`port`.
    public static func connect(port: Int) throws -> BlockingSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in.loopback(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let error = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
        }
        return BlockingSocket(fd: fd)
    }

    /// A listening TCP socket on 127.0.0.1 and a free port, as a descriptor the caller
    /// owns (for code that adopts a socket made elsewhere).
    public static func loopbackListener(backlog: Int32 = 16) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            let error = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Writes all of `bytes`; false if the peer is gone.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    /// Reads what is there (up to `maximum`); empty at EOF or on error.
    public func receive(maximum: Int = 1 << 20) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: maximum)
        let count = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        return count > 0 ? Array(buffer[0..<count]) : []
    }

    /// Reads until EOF.
    public func receiveAll() -> [UInt8] {
        var all: [UInt8] = []
        while true {
            let chunk = self.receive()
            if chunk.isEmpty { return all }
            all += chunk
        }
    }

    /// Sends FIN (half-close).
    public func shutdownWrite() { shutdown(self.fd, Int32(SHUT_WR)) }

    deinit { close(self.fd) }
}

/// A listening socket on 127.0.0.1 whose connections are each handled by `handler` on a
/// thread of their own: scripted upstreams (first speakers, hashing sinks).
public final class BlockingTCPServer: Sendable {
    /// The bound port.
    public let port: Int
    private let fd: Int32
    private let stopped = Flag()

    /// Listens on an ephemeral port and serves until ``stop()``.
    public init(handler: @escaping @Sendable (BlockingSocket) -> Void) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        let stopped = self.stopped
        Thread {
            while !stopped.isSet {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { return }
                let socket = BlockingSocket(fd: client)
                Thread { handler(socket) }.start()
            }
        }.start()
    }

    /// Stops accepting.
    public func stop() {
        guard self.stopped.set() else { return }
        shutdown(self.fd, Int32(SHUT_RDWR))
        close(self.fd)
    }

    deinit { self.stop() }
}

/// A TCP relay that can go silent: after ``freeze()`` it keeps both connections open and
/// keeps reading, but forwards nothing — a peer that stops answering (a partition, a hung
/// node), which only keepalive PINGs can detect.
public final class FreezableProxy: Sendable {
    private let server: BlockingTCPServer
    private let frozen = Flag()

    /// The port to connect to instead of `upstreamPort`.
    public var port: Int { self.server.port }

    /// Relays 127.0.0.1:``port`` to 127.0.0.1:`upstreamPort`.
    public init(upstreamPort: Int) throws {
        let frozen = self.frozen
        self.server = try BlockingTCPServer { client in
            guard let upstream = try? BlockingSocket.connect(port: upstreamPort) else { return }
            Thread { Self.pump(from: client, to: upstream, frozen: frozen) }.start()
            Self.pump(from: upstream, to: client, frozen: frozen)
        }
    }

    private static func pump(from: BlockingSocket, to: BlockingSocket, frozen: Flag) {
        while true {
            let chunk = from.receive(maximum: 65536)
            if chunk.isEmpty {
                to.shutdownWrite()
                return
            }
            if !frozen.isSet { to.send(chunk) }
        }
    }

    /// From now on, bytes are swallowed in both directions.
    public func freeze() { self.frozen.set() }

    /// Stops accepting new connections.
    public func stop() { self.server.stop() }
}

/// A loopback listener whose accept queue is full and never drained: the kernel drops
/// further SYNs, so a connect to ``port`` neither succeeds nor fails until the connector's
/// own timeout (an upstream that is slow to answer, without firewall rules or root).
public final class StalledListener: Sendable {
    /// Where connects stall.
    public let port: Int
    private let descriptors: [Int32]

    public init() throws {
        // Backlog 0: one queued connection fills it.
        let (fd, port) = try BlockingSocket.loopbackListener(backlog: 0)
        self.port = port
        var address = sockaddr_in.loopback(port: port)
        // Fill the queue: the kernel completes these connects, and nothing accepts them.
        let fillers = (0..<2).map { _ in
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            return filler
        }
        self.descriptors = [fd] + fillers
    }

    /// Closes the listener and the connections that fill it.
    public func close() {
        for fd in self.descriptors { Glibc.close(fd) }
    }
}

extension sockaddr_in {
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }
}

/// A one-way boolean shared between threads.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { self.value.load(ordering: .acquiring) }

    /// Sets the flag; returns whether this call set it.
    @discardableResult
    func set() -> Bool { !self.value.exchange(true, ordering: .acquiringAndReleasing) }
}
