import Foundation
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
    ])
    func malformed(response: String, problem: String) {
        #expect(Self.parse(response) == .malformed(problem))
        #expect(Self.parse(response, atEOF: true) == .malformed(problem))
    }
}
