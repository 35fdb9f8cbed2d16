#if canImport(Glibc)
internal import Glibc
#endif

/// A blocking TCP client, independent of NIO: connect, send, half-close, read to EOF.
public enum BlockingTCP {
    /// What happened.
    public struct Exchange: Sendable {
        /// Everything read until EOF.
        public var received: [UInt8]
        /// The errno of a failure, 0 on success.
        public var errorNumber: Int32
    }

    /// Connects to 127.0.0.1:`port`, writes `payload`, shuts down writing and reads until EOF.
    public static func exchange(port: Int, payload: [UInt8], timeoutSeconds: Int = 10) -> Exchange {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return Exchange(received: [], errorNumber: errno) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return Exchange(received: [], errorNumber: errno) }
        var offset = 0
        while offset < payload.count {
            let written = payload[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return Exchange(received: [], errorNumber: errno) }
            offset += written
        }
        shutdown(fd, Int32(SHUT_WR))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            if count < 0 { return Exchange(received: received, errorNumber: errno) }
            received += buffer[0..<count]
        }
        return Exchange(received: received, errorNumber: 0)
    }
}
