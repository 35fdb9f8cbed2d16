import CNI
import Foundation
import Glibc
import MeshTestSupport
import NodeAgent
import Testing

/// The plugin's reading of the node agent's answer (RFC 9112 framing), including the
/// answers a broken or hostile agent could give: each is refused with a reason or waited
/// on, never a trap. A `Content-Length: -1` once trapped the plugin (found by the
/// `plugin-event` fuzz target, Docs/fuzzing.md).
@Suite("Plugin event client")
struct PluginEventClientTests {
    static func parse(_ text: String, atEOF: Bool = false) -> PluginEventClient.ParseOutcome {
        PluginEventClient.parse(Data(text.utf8), atEOF: atEOF)
    }

    @Test("a whole response is read once its body has arrived, whatever follows")
    func complete() {
        let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\n"
        #expect(Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == .complete(.init(status: 200, body: "")))
        #expect(Self.parse(head + "no ne") == .complete(.init(status: 500, body: "no ne")))
        #expect(Self.parse(head + "no netns") == .complete(.init(status: 500, body: "no ne")))
        #expect(Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok") == .complete(.init(status: 200, body: "ok")))
    }

    @Test("a partial response is waited on; without a length, the body runs to the end of the stream")
    func incomplete() {
        #expect(Self.parse("HTTP/1.1 200 OK\r\nContent-Le") == .incomplete)
        #expect(Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nadded") == .incomplete)
        #expect(Self.parse("HTTP/1.0 200 OK\r\n\r\nadded") == .incomplete)
        #expect(Self.parse("HTTP/1.0 200 OK\r\n\r\nadded", atEOF: true) == .complete(.init(status: 200, body: "added")))
    }

    @Test("malformed framing is refused with the reason", arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length \"-1\""),
        ("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "Content-Length \"+5\""),
        ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "Content-Length \"99999999999999999999\""),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "Content-Length 2 and 3"),
        ("HTTP/1.1 20\r\n\r\n", "status code \"20\""),
        ("HTTP/1.1 099 Early\r\n\r\n", "status code \"099\""),
        ("HTTP/2.0 200 OK\r\n\r\n", "status line \"HTTP/2.0 200 OK\""),
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", "status line \"SSH-2.0-OpenSSH_9.2\""),
        ("HTTP/1.1 100 Continue\r\n\r\n", "status code \"100\""),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding (the agent sends Content-Length)"),
        ("HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "whitespace before the colon in \"Content-Length : 2\""),
    ])
    func malformed(response: String, problem: String) {
        #expect(Self.parse(response) == .malformed(problem))
        #expect(Self.parse(response, atEOF: true) == .malformed(problem))
    }

    @Test("against an agent that answers badly, the plugin fails with the reason, not a trap or a wait", arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed HTTP response from the agent: Content-Length \"-1\""),
        ("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "the agent closed the connection after 45 bytes, before a complete response"),
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed HTTP response from the agent: status line \"SSH-2.0-OpenSSH_9.2\""),
    ])
    func hostileAgent(answer: String, reason: String) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pe-\(UUID().uuidString.prefix(8)).sock").path
        let listener = try Self.listen(at: path)
        defer {
            shutdown(listener, Int32(SHUT_RDWR))  // wakes the agent's accept if the client never came
            close(listener)
            unlink(path)
        }
        // The "agent": one connection, reads the request head, answers, closes.
        let agent = Thread {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            var buffer = [UInt8](repeating: 0, count: 4096)
            _ = read(connection, &buffer, buffer.count)
            _ = answer.utf8CString.withUnsafeBufferPointer { write(connection, $0.baseAddress, $0.count - 1) }
            close(connection)
        }
        agent.start()
        let event = CNIPluginEvent(netns: "/var/run/netns/x", podName: "p", podNamespace: "n", ips: [])
        // The client blocks (a plugin is a short-lived process): off the concurrency pool.
        // Its deadline is 30 s, so an answer well before that was not a wait for it, however
        // busy the machine running the tests.
        let (outcome, took) = try await offload { () -> (Result<PluginEventClient.Response, AgentError>, Duration) in
            let clock = ContinuousClock()
            let start = clock.now
            do throws(AgentError) {
                return (.success(try PluginEventClient.post(event, socketPath: path, timeout: .seconds(30))), clock.now - start)
            } catch {
                return (.failure(error), clock.now - start)
            }
        }
        guard case .failure(let error) = outcome else { Issue.record("the plugin accepted \(outcome)"); return }
        #expect(error.description.contains(reason), "\(error)")
        #expect(took < .seconds(20), "refused at once, not at the deadline")
    }

    @Test("an independent agent (Python's http.server) reads the event and its answer is read, with Content-Length and up to EOF",
          arguments: ["length", "eof"])
    func pythonAgent(mode: String) async throws {
        try #require(ExternalTool.isAvailable("python3"), "python3 is required (scripts/install-deps installs it)")
        let directory = try TemporaryDirectory(prefix: "pe")
        let path = directory.url.appendingPathComponent("agent.sock").path
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Interop/plugin_agent.py").path
        let agent = try await ExternalPeer(["python3", script, path, mode])
        defer { agent.stop() }
        let event = CNIPluginEvent(netns: "/var/run/netns/cni-7", podName: "web-0", podNamespace: "shop", ips: [])
        let response = try await offload { try PluginEventClient.post(event, socketPath: path, timeout: .seconds(30)) }
        #expect(response.status == 200, "\(agent.logs)")
        let answer = try JSONDecoder().decode([String: String].self, from: Data(response.body.utf8))
        #expect(answer == ["path": "/cmdadd", "pod": "web-0", "netns": "/var/run/netns/cni-7"])
    }

    static func listen(at path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0, Glibc.listen(fd, 1) == 0 else {
            let code = errno
            if fd >= 0 { close(fd) }
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
        return fd
    }
}
