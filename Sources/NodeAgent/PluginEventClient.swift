import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The plugin's side of the hand-off: `POST /cmdadd` as HTTP/1.1 over the agent's Unix
/// socket, blocking, with one overall deadline (istio-cni's client timeout is 5 s). A
/// plugin is exec'd once per pod, so this is plain sockets: no event loop to start.
public enum PluginEventClient {
    /// The answer of the agent.
    public struct Response: Sendable {
        public var status: Int
        public var body: String
    }

    /// Sends `event` and returns the agent's response.
    ///
    /// - Throws: ``AgentError/Kind/redirection`` with the reason when the agent cannot be
    ///   reached (socket missing, refused), does not answer before the deadline, or answers
    ///   with something that is not HTTP. A non-200 answer is returned, not thrown.
    public static func post(_ event: CNIPluginEvent, socketPath: String, timeout: Duration = .seconds(5)) throws(AgentError) -> Response {
        let body: Data
        do { body = try JSONEncoder().encode(event) } catch { throw AgentError(.badRequest, "encoding the event: \(error)") }
        return try Self.send(body: body, socketPath: socketPath, timeout: timeout)
    }

    /// Sends `body` as the `POST /cmdadd` payload.
    static func send(body: Data, socketPath: String, timeout: Duration) throws(AgentError) -> Response {
        var request = Data("POST /cmdadd HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
        request.append(body)

        let deadline = ContinuousClock.now + timeout
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentError(.redirection, "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw AgentError(.redirection, "socket path too long: \(socketPath)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes + [0]) }
        // Non-blocking from the start: a Unix connect never waits (a full backlog is EAGAIN),
        // so the deadline covers the whole exchange.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            throw AgentError(.redirection, "cannot connect to \(socketPath): \(String(cString: strerror(code)))")
        }

        var written = 0
        while written < request.count {
            try Self.wait(fd, for: Int16(POLLOUT), until: deadline)
            let count = request.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if count < 0, errno != EAGAIN, errno != EINTR { throw AgentError(.redirection, "write: errno \(errno)") }
            if count > 0 { written += count }
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while response.count <= 1 << 20 {
            try Self.wait(fd, for: Int16(POLLIN), until: deadline)
            let count = read(fd, &buffer, buffer.count)
            if count == 0 { break }
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw AgentError(.redirection, "read: errno \(errno)")
            }
            response.append(contentsOf: buffer[0..<count])
            if let parsed = Self.parse(response) { return parsed }
        }
        guard let parsed = Self.parse(response, atEOF: true) else {
            throw AgentError(.redirection, "malformed HTTP response from the agent (\(response.count) bytes)")
        }
        return parsed
    }

    private static func wait(_ fd: Int32, for events: Int16, until deadline: ContinuousClock.Instant) throws(AgentError) {
        let remaining = deadline - .now
        let milliseconds = remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
        guard milliseconds > 0 else { throw AgentError(.redirection, "the agent did not answer in time") }
        var entry = pollfd(fd: fd, events: events, revents: 0)
        let ready = poll(&entry, 1, Int32(min(milliseconds, Int64(Int32.max))))
        if ready == 0 { throw AgentError(.redirection, "the agent did not answer in time") }
    }

    /// A complete response (status line, headers, `Content-Length` body), or `nil` if more is needed.
    static func parse(_ data: Data, atEOF: Bool = false) -> Response? {
        guard let headerEnd = data.range(of: Data("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: data[..<headerEnd.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."),
              let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
        let length = lines.dropFirst().compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
            return Int(parts[1].trimmingCharacters(in: .whitespaces))
        }.first
        let body = data[headerEnd.upperBound...]
        if let length {
            guard body.count >= length else { return nil }
            return Response(status: status, body: String(decoding: body.prefix(length), as: UTF8.self))
        }
        return atEOF ? Response(status: status, body: String(decoding: body, as: UTF8.self)) : nil
    }
}
