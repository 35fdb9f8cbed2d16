import Foundation
@testable import HBONE
import MeshTestSupport
import NIOCore
import NIOEmbedded
import Testing

/// ``ServerHelloSuiteReader`` and ``CipherSuiteGuard`` without sockets; the guard against
/// OpenSSL peers is in `CipherSuiteInteropTests`.
@Suite("TLS 1.3 cipher suite guard")
struct CipherSuiteGuardTests {
    func read(_ chunks: [[UInt8]]) -> ServerHelloSuiteReader.Outcome {
        var reader = ServerHelloSuiteReader()
        var outcome = ServerHelloSuiteReader.Outcome.needMore
        for chunk in chunks { outcome = reader.read(ByteBuffer(bytes: chunk)) }
        return outcome
    }

    @Test("the suite is read from a whole ServerHello, from any two reads of it and from one-byte records")
    func serverHellos() {
        for suite: UInt16 in [0x1301, 0x1302, 0x1303] {
            let hello = TLSRecords.serverHello(suite: suite)
            #expect(self.read([hello]) == .suite(suite))
            for cut in 0..<hello.count {
                let outcome = self.read([Array(hello[..<cut]), Array(hello[cut...])])
                #expect(outcome == .suite(suite), "cut at \(cut)")
                if cut < 5 + 4 + 2 + 32 + 1 + 32 + 2 {
                    #expect(self.read([Array(hello[..<cut])]) == .needMore, "cut at \(cut)")
                }
            }
            for size in [1, 2, 3, 40, 75] {
                #expect(self.read([TLSRecords.fragmented(hello, size: size)]) == .suite(suite), "records of \(size)")
            }
            #expect(self.read(TLSRecords.fragmented(hello, size: 1).map { [$0] }) == .suite(suite), "one byte per read")
            #expect(self.read([TLSRecords.serverHello(suite: suite, sessionID: 0)]) == .suite(suite), "no session id")
        }
    }

    @Test("anything but a well-formed ServerHello is left to TLS: alerts, HTTP, a ClientHello, bad lengths")
    func notServerHellos() {
        let hello = TLSRecords.serverHello(suite: 0x1302)
        let cases: [(String, [UInt8])] = [
            ("fatal alert", TLSRecords.alert(40)),
            ("fatal alert, then a ServerHello", TLSRecords.alert(40) + hello),
            ("change_cipher_spec first", TLSRecords.record(20, [1]) + hello),
            ("HTTP", Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)),
            ("ClientHello type", [22, 3, 3, 0, 4, 1, 0, 0, 0]),
            ("record longer than 2^14", [22, 3, 3, 0x40, 0x01] + hello[5...]),
            ("session id of 33", Array(hello[..<43]) + [33] + Array(hello[44...])),
            ("message too short for its fields", [22, 3, 3, 0, 44, 2, 0, 0, 1] + [UInt8](repeating: 0, count: 40)),
        ]
        for (name, bytes) in cases {
            #expect(self.read([bytes]) == .notServerHello, "\(name)")
        }
    }

    @Test("records BoringSSL skips before a ServerHello are skipped: warning alerts, empty handshake records; none past 512 bytes")
    func skipped() {
        let chacha = TLSRecords.serverHello(suite: 0x1303)
        #expect(self.read([TLSRecords.alert(90, fatal: false) + chacha]) == .suite(0x1303))
        #expect(self.read([TLSRecords.alert(0, fatal: false) + TLSRecords.alert(90, fatal: false) + chacha]) == .suite(0x1303))
        #expect(self.read([TLSRecords.emptyHandshake + chacha]) == .suite(0x1303))
        // Empty records between the fragments of the ServerHello too.
        let pieces = TLSRecords.fragmented(chacha, size: 10)
        var interleaved: [UInt8] = []
        var at = 0
        while at < pieces.count, pieces[at] == 22 {
            let length = Int(pieces[at + 3]) << 8 | Int(pieces[at + 4])
            interleaved += TLSRecords.emptyHandshake + pieces[at..<(at + 5 + length)]
            at += 5 + length
        }
        interleaved += pieces[at...]
        #expect(self.read([interleaved]) == .suite(0x1303))
        #expect(self.read(interleaved.map { [$0] }) == .suite(0x1303))
        // A server that only skips for 512 bytes is refused, not passed unchecked.
        let stalling = [[UInt8]](repeating: TLSRecords.emptyHandshake, count: 103).flatMap { $0 } + chacha
        #expect(self.read([stalling]) == .tooLong)
        #expect(self.read([Array(stalling[..<400])]) == .needMore)
        let warnings = [[UInt8]](repeating: TLSRecords.alert(90, fatal: false), count: 74).flatMap { $0 }
        #expect(self.read([warnings]) == .tooLong)
    }

    @Test("a stream that never completes a ServerHello is decided within the first 512 bytes")
    func bounded() {
        // One record that promises 16 KiB: the 73 bytes needed are in its first 78.
        let long = [22, 3, 3, 0x40, 0x00, 2, 0x00, 0x3F, 0xFC, 3, 3] + [UInt8](repeating: 9, count: 32) + [0]
        #expect(self.read([long]) == .needMore)
        #expect(self.read([long, [0x13, 0x01]]) == .suite(0x1301))
        // Fragments that never add up: 1-byte records whose message type is not ServerHello.
        #expect(self.read([[UInt8]](repeating: [22, 3, 3, 0, 1, 2], count: 200)) != .needMore)
        var reader = ServerHelloSuiteReader()
        var outcome = ServerHelloSuiteReader.Outcome.needMore
        for _ in 0..<100 where outcome == .needMore { outcome = reader.read(ByteBuffer(bytes: [22, 3, 3, 0, 1, 2])) }
        #expect(outcome != .needMore, "decided before 600 bytes")
    }

    @Test("random streams in random cuts: no trap, and the outcome does not depend on how the bytes were cut")
    func randomStreams() async {
        var generator = SeededGenerator(seed: 0x5EED_CAFE)
        for iteration in 0..<3_000 {
            var bytes: [UInt8]
            switch iteration % 3 {
            case 0: bytes = (0..<Int.random(in: 0..<700, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            case 1:
                bytes = TLSRecords.fragmented(TLSRecords.serverHello(suite: UInt16.random(in: 0x1300...0x1306, using: &generator)),
                                        size: Int.random(in: 1...80, using: &generator))
                for _ in 0..<Int.random(in: 0...3, using: &generator) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            default:
                bytes = [22, 3, 3] + (0..<Int.random(in: 0..<300, using: &generator)).map { _ in UInt8.random(in: 0...8, using: &generator) }
            }
            var chunks: [[UInt8]] = []
            var rest = bytes[...]
            while !rest.isEmpty {
                let size = Int.random(in: 1...max(1, rest.count), using: &generator)
                chunks.append(Array(rest.prefix(size)))
                rest = rest.dropFirst(size)
            }
            #expect(self.read(chunks) == self.read([bytes]), "iteration \(iteration)")
            await Task.yield()
        }
    }

    @Test("the policy is ztunnel's two AES-GCM suites where the CPU has AES instructions, as BoringSSL judges it")
    func policy() {
        #expect(CipherSuitePolicy.hbone.allowed == [0x1302, 0x1301])
        #expect(!CipherSuitePolicy.hbone.allows(0x1303))
        #expect(CipherSuitePolicy.cpuHasAESInstructions(cpuinfo: "processor\t: 0\nflags\t\t: fpu sse2 pclmulqdq aes avx\n"))
        #expect(!CipherSuitePolicy.cpuHasAESInstructions(cpuinfo: "processor\t: 0\nflags\t\t: fpu sse2 avx\n"))
        #expect(!CipherSuitePolicy.cpuHasAESInstructions(cpuinfo: "flags\t\t: fpu aes avx\n"), "AES-NI without carry-less multiply")
        #expect(CipherSuitePolicy.cpuHasAESInstructions(cpuinfo: "Features\t: fp asimd aes pmull sha1 sha2\n"))
        #expect(!CipherSuitePolicy.cpuHasAESInstructions(cpuinfo: "Features\t: fp asimd\n"))
        #expect(CipherSuitePolicy.cpuHasAESInstructions(cpuinfo: nil), "unreadable: the strict policy")
        #expect(CipherSuitePolicy.name(0x1303) == "TLS_CHACHA20_POLY1305_SHA256")
        #expect(CipherSuitePolicy.name(0xC02F) == "0xc02f")
    }

    @Test("client: an allowed ServerHello passes untouched and the guard leaves; ChaCha20 gets an alert and an error")
    func clientGuard() throws {
        let allowed = EmbeddedChannel(handler: CipherSuiteGuard(role: .client, policy: .hbone))
        try allowed.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        let hello = TLSRecords.serverHello(suite: 0x1301)
        try allowed.writeInbound(ByteBuffer(bytes: hello[..<20]))
        #expect(try allowed.readInbound(as: ByteBuffer.self) == nil, "held until the suite is known")
        try allowed.writeInbound(ByteBuffer(bytes: hello[20...]))
        #expect(try allowed.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: hello[..<20]))
        #expect(try allowed.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: hello[20...]))
        #expect(throws: (any Error).self) { try allowed.pipeline.syncOperations.context(handlerType: CipherSuiteGuard.self) }
        try allowed.writeInbound(ByteBuffer(bytes: [1, 2, 3]))
        #expect(try allowed.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1, 2, 3]))
        _ = try allowed.finish()

        let refused = EmbeddedChannel(handler: CipherSuiteGuard(role: .client, policy: .hbone))
        try refused.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        #expect(throws: CipherSuiteRefused(suite: 0x1303, byUs: false)) {
            try refused.writeInbound(ByteBuffer(bytes: TLSRecords.serverHello(suite: 0x1303)))
        }
        #expect(try refused.readInbound(as: ByteBuffer.self) == nil, "TLS never sees the ServerHello")
        #expect(try refused.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: CipherSuiteGuard.handshakeFailureAlert))
        #expect(!refused.isActive)
        #expect("\(CipherSuiteRefused(suite: 0x1303, byUs: false))".contains("the server chose TLS_CHACHA20_POLY1305_SHA256"))

        // Warning alerts and empty records, then ChaCha20: still refused.
        let sneaky = EmbeddedChannel(handler: CipherSuiteGuard(role: .client, policy: .hbone))
        try sneaky.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        #expect(throws: CipherSuiteRefused(suite: 0x1303, byUs: false)) {
            try sneaky.writeInbound(ByteBuffer(bytes: TLSRecords.alert(90, fatal: false) + TLSRecords.emptyHandshake
                + TLSRecords.serverHello(suite: 0x1303)))
        }
        #expect(try sneaky.readInbound(as: ByteBuffer.self) == nil)
        #expect(!sneaky.isActive)

        // Nothing but skippable records for 512 bytes: refused, with no suite to name.
        let stalling = EmbeddedChannel(handler: CipherSuiteGuard(role: .client, policy: .hbone))
        try stalling.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        #expect(throws: CipherSuiteRefused(suite: nil, byUs: false)) {
            for _ in 0..<103 where stalling.isActive { try stalling.writeInbound(ByteBuffer(bytes: TLSRecords.emptyHandshake)) }
        }
        #expect(try stalling.readInbound(as: ByteBuffer.self) == nil)
        #expect(try stalling.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: CipherSuiteGuard.handshakeFailureAlert))
        #expect(!stalling.isActive)
        #expect("\(CipherSuiteRefused(suite: nil, byUs: false))".contains("no ServerHello within the first 512 bytes"))
    }

    @Test("server: an allowed first flight is written as it was; a ChaCha20 one is replaced by an alert")
    func serverGuard() throws {
        let allowed = EmbeddedChannel(handler: CipherSuiteGuard(role: .server, policy: .hbone))
        try allowed.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        let hello = TLSRecords.serverHello(suite: 0x1302)
        let first = allowed.write(ByteBuffer(bytes: hello[..<30]))
        allowed.flush()
        #expect(try allowed.readOutbound(as: ByteBuffer.self) == nil, "held until the suite is known")
        try allowed.writeOutbound(ByteBuffer(bytes: hello[30...]))
        #expect(try allowed.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: hello[..<30]))
        #expect(try allowed.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: hello[30...]))
        try first.wait()
        #expect(throws: (any Error).self) { try allowed.pipeline.syncOperations.context(handlerType: CipherSuiteGuard.self) }
        _ = try allowed.finish()

        // NIOSSL writes its first flight with writeAndFlush: NIO calls the guard's write and
        // then its flush, so leaving in the write would lose that flush (found in interop).
        let whole = EmbeddedChannel(handler: CipherSuiteGuard(role: .server, policy: .hbone))
        try whole.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        try whole.writeAndFlush(ByteBuffer(bytes: hello)).wait()
        #expect(try whole.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: hello))
        #expect(throws: (any Error).self) { try whole.pipeline.syncOperations.context(handlerType: CipherSuiteGuard.self) }
        _ = try whole.finish()

        let refused = EmbeddedChannel(handler: CipherSuiteGuard(role: .server, policy: .hbone))
        try refused.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        let write = refused.writeAndFlush(ByteBuffer(bytes: TLSRecords.serverHello(suite: 0x1303)))
        #expect(throws: CipherSuiteRefused(suite: 0x1303, byUs: true)) { try write.wait() }
        #expect(try refused.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: CipherSuiteGuard.handshakeFailureAlert))
        #expect(try refused.readOutbound(as: ByteBuffer.self) == nil, "the ServerHello never leaves")
        #expect(!refused.isActive)
    }
}
