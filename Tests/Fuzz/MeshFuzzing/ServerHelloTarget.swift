internal import HBONE
internal import NIOCore
internal import NIOEmbedded

/// The first bytes a TLS server sends, as our client's ``CipherSuiteGuard`` reads them
/// (``ServerHelloSuiteReader``) to hold HBONE to ztunnel's two AES-GCM suites.
///
/// Input: one control byte (the size of the pieces the rest is cut into), then the server's
/// bytes. Properties, for every input:
///
/// - the reader's outcome does not depend on how the bytes are cut: whole, in pieces of the
///   control byte's size, or one byte at a time;
/// - a client guard in a pipeline, given the pieces, passes every byte on unchanged and in
///   order when the outcome is an allowed suite or not a ServerHello; passes nothing and
///   writes nothing while more bytes are needed; and for a refused suite passes nothing,
///   writes exactly a fatal `handshake_failure` alert, reports ``CipherSuiteRefused`` and
///   closes the connection — and so when the first 512 bytes hold only records TLS would
///   skip (warning alerts, empty handshake records) and no ServerHello.
///
/// Accepted: the bytes start with a ServerHello whose suite was read.
enum ServerHelloTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let size = Int(reader.byte() % 64) + 1
        let bytes = reader.rest
        let pieces = stride(from: 0, to: bytes.count, by: size).map { Array(bytes[$0..<min($0 + size, bytes.count)]) }

        let whole = self.outcome([bytes])
        let cut = self.outcome(pieces)
        let single = self.outcome(bytes.map { [$0] })
        try require(cut == whole && single == whole, "whole \(whole), in \(size)-byte pieces \(cut), byte by byte \(single)")

        let policy = CipherSuitePolicy.hbone
        let channel = EmbeddedChannel(handler: CipherSuiteGuard(role: .client, policy: policy))
        do {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15008)).wait()
        } catch {
            throw FuzzFailure("an embedded channel did not connect: \(error)")
        }
        var refusal: (any Error)?
        for piece in pieces where channel.isActive {
            do { try channel.writeInbound(ByteBuffer(bytes: piece)) } catch { refusal = error }
        }
        var passed: [UInt8] = []
        var written: [UInt8] = []
        do {
            while let buffer = try channel.readInbound(as: ByteBuffer.self) { passed += buffer.readableBytesView }
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written += buffer.readableBytesView }
        } catch {
            throw FuzzFailure("the guard passed on something that is not bytes: \(error)")
        }
        func refused(_ suite: UInt16?) throws(FuzzFailure) {
            let what = suite.map { "refused \($0)" } ?? "refused, no ServerHello"
            try require(passed.isEmpty, "\(what), yet \(passed.count) bytes reached TLS")
            try require(written == CipherSuiteGuard.handshakeFailureAlert, "\(what) and wrote \(written)")
            try require(refusal as? CipherSuiteRefused == CipherSuiteRefused(suite: suite, byUs: false),
                        "\(what) and reported \(String(describing: refusal))")
            try require(!channel.isActive, "\(what) and left the connection open")
        }
        switch whole {
        case .suite(let suite) where !policy.allows(suite):
            try refused(suite)
        case .tooLong:
            try refused(nil)
        case .needMore:
            try require(passed.isEmpty && written.isEmpty && refusal == nil,
                        "undecided, yet \(passed.count) bytes passed, \(written.count) written, error \(String(describing: refusal))")
        case .suite, .notServerHello:
            try require(passed == bytes, "\(whole): \(passed.count) of \(bytes.count) bytes passed on unchanged")
            try require(written.isEmpty && refusal == nil, "\(whole): wrote \(written), error \(String(describing: refusal))")
        }
        // A channel the guard closed has queued the removal of its handlers on the loop;
        // without running it the pipeline and the channel keep each other alive.
        _ = try? channel.finish()
        channel.embeddedEventLoop.run()
        if case .suite = whole { return true }
        return false
    }

    private static func outcome(_ pieces: [[UInt8]]) -> ServerHelloSuiteReader.Outcome {
        var reader = ServerHelloSuiteReader()
        var outcome = ServerHelloSuiteReader.Outcome.needMore
        for piece in pieces { outcome = reader.read(ByteBuffer(bytes: piece)) }
        return outcome
    }
}
