package import NIOCore
package import Logging
internal import Foundation

/// The TLS 1.3 cipher suites an HBONE connection may use: exactly TLS_AES_256_GCM_SHA384
/// and TLS_AES_128_GCM_SHA256, as ztunnel configures rustls (`src/tls/lib.rs`; no
/// ChaCha20).
///
/// BoringSSL, inside swift-nio-ssl, cannot be told which TLS 1.3 suites to use: it always
/// offers TLS_CHACHA20_POLY1305_SHA256 as a client and, as a server, follows the client's
/// preference among all three (on a CPU with AES instructions; without them it prefers
/// ChaCha20). ``CipherSuiteGuard`` holds every connection to this policy by reading the
/// suite the ServerHello names.
///
/// On a CPU without AES instructions (`aes` and `pclmulqdq` on x86, `aes` and `pmull` on
/// Arm, as BoringSSL's `EVP_has_aes_hardware` decides) BoringSSL offers and prefers
/// ChaCha20 on both ends, so two of our endpoints would agree on nothing else; there the
/// policy also allows ChaCha20. ztunnel's peers never offer it, so against them the suite
/// is still one of the two.
package struct CipherSuitePolicy: Sendable, Equatable {
    /// TLS_AES_128_GCM_SHA256 (RFC 8446 §B.4).
    package static let aes128GCM: UInt16 = 0x1301
    /// TLS_AES_256_GCM_SHA384.
    package static let aes256GCM: UInt16 = 0x1302
    /// TLS_CHACHA20_POLY1305_SHA256.
    package static let chacha20Poly1305: UInt16 = 0x1303

    /// The suites allowed.
    package let allowed: [UInt16]

    /// ztunnel's two suites.
    package static let hbone = CipherSuitePolicy(allowed: [aes256GCM, aes128GCM])

    /// What this process enforces: ``hbone``, plus ChaCha20 on a CPU without AES instructions.
    package static let current: CipherSuitePolicy = cpuHasAESInstructions()
        ? .hbone : CipherSuitePolicy(allowed: [aes256GCM, aes128GCM, chacha20Poly1305])

    package func allows(_ suite: UInt16) -> Bool { self.allowed.contains(suite) }

    /// The suite's RFC 8446 name, or its code point.
    package static func name(_ suite: UInt16) -> String {
        switch suite {
        case aes128GCM: "TLS_AES_128_GCM_SHA256"
        case aes256GCM: "TLS_AES_256_GCM_SHA384"
        case chacha20Poly1305: "TLS_CHACHA20_POLY1305_SHA256"
        case 0x1304: "TLS_AES_128_CCM_SHA256"
        case 0x1305: "TLS_AES_128_CCM_8_SHA256"
        default: "0x" + String(suite, radix: 16)
        }
    }

    /// Whether `/proc/cpuinfo` lists the two instructions BoringSSL needs for hardware
    /// AES-GCM; true when it cannot be read (the strict policy).
    package static func cpuHasAESInstructions(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> Bool {
        guard let cpuinfo else { return true }
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            guard key == "flags" || key == "Features" else { continue }
            let words = Set(parts[1].split(separator: " "))
            return words.contains("aes") && (words.contains("pclmulqdq") || words.contains("pmull"))
        }
        return true
    }
}

/// A handshake refused because the ServerHello chose a suite outside ``CipherSuitePolicy``.
package struct CipherSuiteRefused: Error, CustomStringConvertible, Equatable {
    /// The suite the server chose; `nil` when no ServerHello came within the bytes read
    /// (``ServerHelloSuiteReader/Outcome/tooLong``).
    package let suite: UInt16?
    /// Whether it was our server that chose it (so the client offered nothing better first).
    package let byUs: Bool

    package init(suite: UInt16?, byUs: Bool) {
        self.suite = suite
        self.byUs = byUs
    }

    package var description: String {
        let allowed = CipherSuitePolicy.current.allowed.map(CipherSuitePolicy.name).joined(separator: ", ")
        guard let suite = self.suite else {
            return "no ServerHello within the first \(ServerHelloSuiteReader.retained) bytes of the handshake "
                + "(only empty records and warning alerts): its suite could not be checked against \(allowed)"
        }
        return (self.byUs ? "the client's first choice among our suites was " : "the server chose ")
            + "\(CipherSuitePolicy.name(suite)); HBONE allows \(allowed)"
    }
}

/// Reads the `cipher_suite` of the ServerHello (or HelloRetryRequest) at the start of a TLS
/// connection's server-to-client bytes, however they are cut into reads and records.
///
/// RFC 8446 §5.1: handshake messages "MAY be fragmented across multiple records" and
/// "MUST NOT send zero-length fragments of Handshake types"; §4.1.3: a ServerHello is
/// `legacy_version(2) random(32) legacy_session_id_echo<0..32> cipher_suite(2) …`. A
/// stream that starts with anything TLS refuses (a fatal alert, another content type,
/// garbage) is reported as not a ServerHello and left to TLS. Records BoringSSL skips
/// before the ServerHello — warning alerts, empty handshake records — are skipped here
/// too, so they cannot carry a ChaCha20 ServerHello past the check. At most the first 512
/// bytes are read: a ServerHello of 41 to 73 needed bytes fits with room to spare, and a
/// stream that has none there is ``Outcome/tooLong`` and refused (fail closed), though
/// BoringSSL would go on skipping.
package struct ServerHelloSuiteReader {
    package enum Outcome: Equatable, Sendable {
        /// Not enough bytes yet.
        case needMore
        /// The suite the server chose.
        case suite(UInt16)
        /// The stream does not start with a well-formed ServerHello: TLS will refuse it.
        case notServerHello
        /// No ServerHello within the first ``retained`` bytes, only records BoringSSL would
        /// skip (empty handshake records, warning alerts): refused, not passed unchecked.
        case tooLong
    }

    package static let retained = 512
    private var bytes: [UInt8] = []
    private var outcome = Outcome.needMore

    /// A reader at the start of a stream.
    package init() {}

    /// Adds the next bytes of the stream and says what is known; once known, it stays.
    package mutating func read(_ buffer: ByteBuffer) -> Outcome {
        guard self.outcome == .needMore else { return self.outcome }
        if self.bytes.isEmpty {
            // Usually the first read holds the whole ServerHello: read it in place.
            self.outcome = buffer.withUnsafeReadableBytes { Self.parse($0) }
            if self.outcome != .needMore { return self.outcome }
        }
        let room = Self.retained - self.bytes.count
        if room > 0 { self.bytes.append(contentsOf: buffer.readableBytesView.prefix(room)) }
        self.outcome = self.bytes.withUnsafeBytes { Self.parse($0) }
        if self.outcome != .needMore { self.bytes = [] }
        return self.outcome
    }

    /// What `stream`, the start of a server's bytes, says (its first ``retained`` bytes).
    package static func parse(_ stream: UnsafeRawBufferPointer) -> Outcome {
        let bytes = UnsafeRawBufferPointer(rebasing: stream.prefix(Self.retained))
        let undecided: Outcome = bytes.count >= Self.retained ? .tooLong : .needMore
        var first: Range<Int>?  // the first handshake fragment, read in place while it is the only one
        var handshake: [UInt8] = []  // the fragments joined, once there are two; empty arrays do not allocate
        var at = 0
        while true {
            // TLSPlaintext: ContentType, legacy_record_version 0x03xx, uint16 length.
            guard bytes.count - at >= 5 else { return undecided }
            guard bytes[at + 1] == 3 else { return .notServerHello }
            let length = Int(bytes[at + 3]) << 8 | Int(bytes[at + 4])
            guard length <= 1 << 14 else { return .notServerHello }
            switch bytes[at] {
            case 21 where length == 2:
                // An alert. BoringSSL ignores a few warnings before the version is known, so
                // they are skipped here too, or a server could send one, then ChaCha20.
                guard bytes.count - at >= 7 else { return undecided }
                guard bytes[at + 5] == 1 else { return .notServerHello }  // fatal: the handshake ends
                at += 7
            case 22 where length == 0:
                // An empty handshake record: BoringSSL skips up to 32 in a row; so do we.
                at += 5
            case 22:
                let available = min(length, bytes.count - at - 5)
                let fragment = (at + 5)..<(at + 5 + available)
                let outcome: Outcome
                if let head = first {
                    if handshake.isEmpty { handshake.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[head])) }
                    handshake.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[fragment]))
                    outcome = handshake.withUnsafeBytes { Self.serverHello($0) }
                } else {
                    first = fragment
                    outcome = Self.serverHello(UnsafeRawBufferPointer(rebasing: bytes[fragment]))
                }
                guard outcome == .needMore else { return outcome }
                guard available == length else { return undecided }
                at += 5 + length
            default:
                return .notServerHello
            }
        }
    }

    private static func serverHello(_ message: UnsafeRawBufferPointer) -> Outcome {
        // Handshake: msg_type server_hello(2), uint24 length, then the body.
        guard let type = message.first else { return .needMore }
        guard type == 2 else { return .notServerHello }
        guard message.count >= 39 else { return .needMore }
        let length = Int(message[1]) << 16 | Int(message[2]) << 8 | Int(message[3])
        let sessionID = Int(message[38])
        // The body holds at least version, random, session id, suite and compression method.
        guard sessionID <= 32, length >= 2 + 32 + 1 + sessionID + 2 + 1 else { return .notServerHello }
        guard message.count >= 39 + sessionID + 2 else { return .needMore }
        return .suite(UInt16(message[39 + sessionID]) << 8 | UInt16(message[40 + sessionID]))
    }
}

/// Holds a connection to ``CipherSuitePolicy``. It sits between the socket and
/// `NIOSSLHandler` until the ServerHello has passed, then leaves the pipeline, so it costs
/// nothing per message:
///
/// - **client**: the server's first bytes are held until the ServerHello's suite is read.
///   A suite outside the policy is answered with a fatal `handshake_failure` alert and the
///   connection fails with ``CipherSuiteRefused``; TLS never sees the ServerHello.
/// - **server**: our own first flight is held until its ServerHello's suite is read. A suite
///   outside the policy (the client preferred ChaCha20, or offered nothing else) is
///   replaced by a fatal `handshake_failure` alert — what a rustls server with ztunnel's
///   suites sends such a client — and the connection is closed.
package final class CipherSuiteGuard: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    package enum Role {
        case client
        case server
    }

    /// A fatal `handshake_failure` alert record (RFC 8446 §6): alert(21), 0x0303, length 2,
    /// level fatal(2), description handshake_failure(40).
    package static let handshakeFailureAlert: [UInt8] = [21, 3, 3, 0, 2, 2, 40]

    private let role: Role
    private let policy: CipherSuitePolicy
    private let logger: Logger?
    private var reader = ServerHelloSuiteReader()
    private var heldReads: [ByteBuffer] = []
    private var heldReadComplete = false
    private var heldWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var heldFlush = false
    private var state = State.reading

    private enum State {
        /// Holding the first bytes until the ServerHello's suite is read.
        case reading
        /// The suite is allowed, or the bytes are not a ServerHello for TLS to refuse: pass all.
        case passing
        /// Refused: nothing more goes either way.
        case refused
    }

    package init(role: Role, policy: CipherSuitePolicy = .current, logger: Logger? = nil) {
        self.role = role
        self.policy = policy
        self.logger = logger
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.role == .client, self.state == .reading else {
            if self.state != .refused { context.fireChannelRead(data) }
            return
        }
        let buffer = self.unwrapInboundIn(data)
        let outcome = self.reader.read(buffer)
        guard outcome != .needMore else { return self.heldReads.append(buffer) }
        self.decide(context: context, outcome, current: .read(buffer))
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        guard self.role == .client, self.state == .reading else {
            if self.state != .refused { context.fireChannelReadComplete() }
            return
        }
        self.heldReadComplete = true
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard self.role == .server, self.state == .reading else {
            if self.state == .refused { promise?.fail(ChannelError.ioOnClosedChannel) } else { context.write(data, promise: promise) }
            return
        }
        let buffer = self.unwrapOutboundIn(data)
        let outcome = self.reader.read(buffer)
        guard outcome != .needMore else { return self.heldWrites.append((buffer, promise)) }
        self.decide(context: context, outcome, current: .write(buffer, promise))
    }

    package func flush(context: ChannelHandlerContext) {
        switch (self.role, self.state) {
        case (.server, .reading):
            self.heldFlush = true
        case (.server, .passing):
            context.flush()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        case (.client, _), (.server, .refused):
            if self.state != .refused { context.flush() }
        }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        // Only if the channel went away undecided: nothing held may be left unanswered.
        let writes = self.heldWrites
        self.heldWrites = []
        self.heldReads = []
        for (_, promise) in writes { promise?.fail(ChannelError.ioOnClosedChannel) }
    }

    /// The read or write that decided (held only while undecided, so usually nothing was).
    private enum Current {
        case read(ByteBuffer)
        case write(ByteBuffer, EventLoopPromise<Void>?)
    }

    private func decide(context: ChannelHandlerContext, _ outcome: ServerHelloSuiteReader.Outcome, current: Current) {
        switch outcome {
        case .suite(let suite) where !self.policy.allows(suite):
            self.refuse(context: context, suite: suite, current: current)
        case .tooLong, .needMore:
            // `.needMore` never gets here (both callers hold the bytes and return first);
            // were it to, refusing fails closed.
            self.refuse(context: context, suite: nil, current: current)
        case .suite, .notServerHello:
            self.state = .passing
            self.release(context: context, current)
            // A server's first flight comes as writeAndFlush: NIO calls this handler's
            // flush right after its write, so the guard leaves on that flush, not here.
            if self.role == .client { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
        }
    }

    /// Passes on what was held and `current`, in order.
    private func release(context: ChannelHandlerContext, _ current: Current) {
        let reads = self.heldReads, writes = self.heldWrites
        self.heldReads = []
        self.heldWrites = []
        for buffer in reads { context.fireChannelRead(NIOAny(buffer)) }
        for (buffer, promise) in writes { context.write(NIOAny(buffer), promise: promise) }
        switch current {
        case .read(let buffer): context.fireChannelRead(NIOAny(buffer))
        case .write(let buffer, let promise): context.write(NIOAny(buffer), promise: promise)
        }
        if self.heldReadComplete { context.fireChannelReadComplete() }
        if self.heldFlush { context.flush() }
    }

    private func refuse(context: ChannelHandlerContext, suite: UInt16?, current: Current) {
        self.state = .refused
        let error = CipherSuiteRefused(suite: suite, byUs: self.role == .server)
        if case .write(_, let promise) = current { promise?.fail(error) }
        let writes = self.heldWrites
        self.heldReads = []
        self.heldWrites = []
        for (_, promise) in writes { promise?.fail(error) }
        self.logger?.warning("refusing a TLS handshake", metadata: [
            "peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")", "reason": "\(error)",
        ])
        var alert = context.channel.allocator.buffer(capacity: Self.handshakeFailureAlert.count)
        alert.writeBytes(Self.handshakeFailureAlert)
        context.writeAndFlush(NIOAny(alert), promise: nil)
        // The client's connect fails with this error (HandshakeWatcher, past NIOSSLHandler).
        if self.role == .client { context.fireErrorCaught(error) }
        context.close(promise: nil)
    }
}
