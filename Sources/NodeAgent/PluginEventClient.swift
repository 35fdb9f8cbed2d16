package import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The plugin's side of the hand-off: `POST /cmdadd` as HTTP/1.1 over the agent's Unix
/// socket, blocking, with one overall deadline (istio-cni's client timeout is 5 s). A
/// plugin is exec'd once per pod, so this is plain sockets: no event loop to start.
public enum PluginEventClient {
    /// The answer of the agent.
    public struct Response: Hashable, Sendable {
        public var status: Int
        public var body: String

        package init(status: Int, body: String) {
            self.status = status
            self.body = body
        }
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
            // send with MSG_NOSIGNAL: an agent that closes early is an error, not a SIGPIPE.
            let count = request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + written, $0.count - written, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno != EAGAIN, errno != EINTR { throw AgentError(.redirection, "write: errno \(errno)") }
            if count > 0 { written += count }
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var closed = false
        while response.count <= 1 << 20 {
            try Self.wait(fd, for: Int16(POLLIN), until: deadline)
            let count = read(fd, &buffer, buffer.count)
            if count == 0 {
                closed = true
                break
            }
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                if errno == ECONNRESET { throw AgentError(.redirection, "the agent reset the connection after \(response.count) bytes") }
                throw AgentError(.redirection, "read: errno \(errno)")
            }
            response.append(contentsOf: buffer[0..<count])
            switch Self.parse(response) {
            case .complete(let parsed): return parsed
            case .malformed(let problem): throw AgentError(.redirection, "malformed HTTP response from the agent: \(problem)")
            case .incomplete: continue
            }
        }
        switch Self.parse(response, atEOF: closed) {
        case .complete(let parsed): return parsed
        case .malformed(let problem): throw AgentError(.redirection, "malformed HTTP response from the agent: \(problem)")
        case .incomplete where closed:
            throw AgentError(.redirection, "the agent closed the connection after \(response.count) bytes, before a complete response")
        case .incomplete: throw AgentError(.redirection, "the agent's response is not complete after \(response.count) bytes")
        }
    }

    private static func wait(_ fd: Int32, for events: Int16, until deadline: ContinuousClock.Instant) throws(AgentError) {
        let remaining = deadline - .now
        let milliseconds = remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
        guard milliseconds > 0 else { throw AgentError(.redirection, "the agent did not answer in time") }
        var entry = pollfd(fd: fd, events: events, revents: 0)
        let ready = poll(&entry, 1, Int32(min(milliseconds, Int64(Int32.max))))
        if ready == 0 { throw AgentError(.redirection, "the agent did not answer in time") }
    }

    /// What the bytes received so far are.
    package enum ParseOutcome: Hashable, Sendable {
        /// Not a whole response yet: read on.
        case incomplete
        /// A whole response; anything after it is ignored (the agent closes the connection).
        case complete(Response)
        /// Not an HTTP/1.x response, whatever follows.
        case malformed(String)
    }

    /// Reads a response as RFC 9112 frames it: status line (§4: `HTTP/1.x`, a three-digit
    /// final code; the agent sends no interim 1xx), header fields (§5.1: no whitespace
    /// between a field name and its colon), then a body of `Content-Length` octets (RFC 9110
    /// §8.6: `1*DIGIT`; several fields must agree) or, without one, up to the end of the
    /// stream (RFC 9112 §6.3). `Transfer-Encoding`, which the agent never sends, is refused
    /// rather than read as a raw body. `atEOF`: the agent has closed the connection.
    package static func parse(_ data: Data, atEOF: Bool = false) -> ParseOutcome {
        guard let headerEnd = data.range(of: Data("\r\n\r\n".utf8)) else { return .incomplete }
        let head = String(decoding: data[..<headerEnd.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines[0].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard statusLine.count >= 2, statusLine[0] == "HTTP/1.0" || statusLine[0] == "HTTP/1.1" else {
            return .malformed("status line \(String(lines[0].prefix(40)).debugDescription)")
        }
        guard statusLine[1].utf8.count == 3, statusLine[1].utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              let status = Int(statusLine[1]), status >= 200 else {
            return .malformed("status code \(String(statusLine[1].prefix(10)).debugDescription)")
        }
        var length: Int?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            if name.last == " " || name.last == "\t" { return .malformed("whitespace before the colon in \(String(line.prefix(40)).debugDescription)") }
            if name == "transfer-encoding" { return .malformed("Transfer-Encoding (the agent sends Content-Length)") }
            guard name == "content-length" else { continue }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
            guard !value.isEmpty, value.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let parsed = Int(value) else {
                return .malformed("Content-Length \(String(value.prefix(20)).debugDescription)")
            }
            if let length, length != parsed { return .malformed("Content-Length \(length) and \(parsed)") }
            length = parsed
        }
        let body = data[headerEnd.upperBound...]
        if let length {
            guard body.count >= length else { return .incomplete }
            return .complete(Response(status: status, body: String(decoding: body.prefix(length), as: UTF8.self)))
        }
        return atEOF ? .complete(Response(status: status, body: String(decoding: body, as: UTF8.self))) : .incomplete
    }
}
