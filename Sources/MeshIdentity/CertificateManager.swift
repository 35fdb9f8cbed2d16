internal import Foundation
public import ServiceLifecycle
public import Logging
internal import Synchronization

/// Fetches, caches and rotates workload certificates, one entry per identity.
///
/// Modelled on ztunnel's `SecretManager` (`src/identity/manager.rs`): callers on the
/// data path ask for an identity's certificate and wait while it is being issued;
/// each identity is then refreshed in the background at half its lifetime; a failed
/// refresh keeps the still-valid certificate and retries with jittered exponential
/// backoff; at most eight CSRs are in flight, and a connection waiting for a
/// certificate overtakes background rotation.
///
/// The manager is a `Service`: signings and timers run inside ``run()``, so it must be
/// running (for example in a `ServiceGroup`) for requests to complete. Time comes
/// from the injected ``IdentityClock``.
public actor CertificateManager: Service {
    /// Who is asking, from most to least urgent (ztunnel's `Priority`).
    public enum Priority: Int, Sendable, Comparable {
        /// Rotation of a certificate that is still valid.
        case background = 0
        /// Prefetch for a workload that will need it soon.
        case warmup = 1
        /// A connection is waiting for it.
        case realTime = 2

        public static func < (lhs: Priority, rhs: Priority) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// The state of one identity, as ztunnel's admin `config_dump` reports it.
    public enum State: Sendable, Equatable {
        /// The first certificate is being issued.
        case initializing
        /// A valid certificate is available.
        case available(WorkloadCertificate)
        /// No valid certificate; the last attempt failed with this error.
        case unavailable(IdentityError)
    }

    /// How the manager behaves.
    public struct Configuration: Sendable, Hashable {
        /// Retry backoff after a failed signing.
        public struct Backoff: Sendable, Hashable {
            /// Delay before the first retry. Default 500 ms.
            public var initial: Duration = .milliseconds(500)
            /// Factor applied per consecutive failure. Default 2.
            public var multiplier: Int = 2
            /// Upper bound of any delay, jitter included. Default 150 s.
            public var maximum: Duration = .seconds(150)
            /// Relative jitter (± this fraction). Default 0.2.
            public var jitter: Double = 0.2
            /// The defaults above.
            public init() {}
        }

        /// Requested certificate lifetime (`SECRET_TTL`). Default 24 h.
        public var certificateLifetime: Duration = .seconds(24 * 3600)
        /// Fraction of the lifetime after which a certificate is refreshed. Default 0.5.
        public var refreshFraction: Double = 0.5
        /// Maximum CSRs in flight at once. Default 8.
        public var maximumConcurrentSignings: Int = 8
        /// Retry backoff.
        public var backoff = Backoff()
        /// The defaults above.
        public init() {}
    }

    private let provider: any CertificateProvider
    private let clock: any IdentityClock
    private let logger: Logger
    private var machine: StateMachine
    private var waiters: [SPIFFEID: [CheckedContinuation<WorkloadCertificate, any Error>]] = [:]
    private var subscribers: [SPIFFEID: [UUID: AsyncStream<WorkloadCertificate>.Continuation]] = [:]
    private let commands: AsyncStream<Command>
    private let commandSink: AsyncStream<Command>.Continuation
    private var isShutDown = false
    /// The latest certificate of every identity, readable without entering the actor: the
    /// data path asks on every new connection, and a hop to the actor and back is two
    /// thread switches. Written by ``perform(_:)`` whenever a certificate is issued.
    private let issued = Mutex<[SPIFFEID: WorkloadCertificate]>([:])

    private enum Command: Sendable {
        case sign(SPIFFEID)
        case timer(Date)
    }

    /// Creates a manager that gets certificates from `provider`.
    public init(
        provider: any CertificateProvider,
        clock: any IdentityClock = SystemIdentityClock(),
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "swift-hbone.identity")
    ) {
        self.provider = provider
        self.clock = clock
        self.logger = logger
        self.machine = StateMachine(configuration: configuration)
        (self.commands, self.commandSink) = AsyncStream.makeStream(of: Command.self)
    }

    // MARK: Public API

    /// Returns a valid certificate for `identity`, waiting for issuance when needed.
    ///
    /// Throws ``IdentityError/unavailable(identity:reason:)`` when issuance failed and no
    /// valid certificate exists, and ``IdentityError/managerShutDown`` after shutdown.
    public func certificate(for identity: SPIFFEID, priority: Priority = .realTime) async throws -> WorkloadCertificate {
        if self.isShutDown { throw IdentityError.managerShutDown }
        let (certificate, actions) = self.machine.request(identity, priority: priority, now: self.clock.now)
        self.perform(actions)
        if let certificate { return certificate }
        return try await withCheckedThrowingContinuation { continuation in
            self.waiters[identity, default: []].append(continuation)
        }
    }

    /// The certificate of `identity` if one is issued and valid now; `nil` otherwise. It
    /// never waits and never starts issuance: the data path calls it first and falls back to
    /// ``certificate(for:priority:)``.
    public nonisolated func validCertificate(for identity: SPIFFEID) -> WorkloadCertificate? {
        guard let certificate = self.issued.withLock({ $0[identity] }), certificate.isValid(at: self.clock.now) else {
            return nil
        }
        return certificate
    }

    /// Starts issuing `identity` at warm-up priority without waiting (ztunnel's prefetch).
    public func prefetch(_ identity: SPIFFEID) {
        guard !self.isShutDown else { return }
        let (_, actions) = self.machine.request(identity, priority: .warmup, now: self.clock.now)
        self.perform(actions)
    }

    /// Stops rotating `identity` and drops its certificate (the workload is gone).
    public func forget(_ identity: SPIFFEID) {
        self.machine.forget(identity)
        self.issued.withLock { $0[identity] = nil }
        for continuation in self.waiters.removeValue(forKey: identity) ?? [] {
            continuation.resume(throwing: IdentityError.unavailable(identity: identity, reason: "identity forgotten"))
        }
        for continuation in (self.subscribers.removeValue(forKey: identity) ?? [:]).values {
            continuation.finish()
        }
    }

    /// The current state of `identity`, or `nil` if it is not managed.
    public func state(of identity: SPIFFEID) -> State? {
        self.machine.state(of: identity, now: self.clock.now)
    }

    /// Every managed identity, sorted (for the admin certificate dump).
    public var identities: [SPIFFEID] { self.machine.entries.keys.sorted() }

    /// The retry delay in force for `identity` after consecutive failures, if any.
    public func currentRetryDelay(of identity: SPIFFEID) -> Duration? { self.machine.retryDelay(of: identity) }

    /// Certificates issued for `identity` from now on: every rotation is delivered.
    public func updates(for identity: SPIFFEID) -> AsyncStream<WorkloadCertificate> {
        let (stream, continuation) = AsyncStream.makeStream(of: WorkloadCertificate.self)
        let key = UUID()
        self.subscribers[identity, default: [:]][key] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.removeSubscriber(identity, key) }
        }
        return stream
    }

    /// Runs signings and rotation timers until cancelled or gracefully shut down.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await command in self.commands {
                    switch command {
                    case .sign(let identity):
                        group.addTask { await self.sign(identity) }
                    case .timer(let deadline):
                        group.addTask {
                            do {
                                try await self.clock.sleep(until: deadline)
                            } catch {
                                return
                            }
                            await self.timerFired(deadline)
                        }
                    }
                }
                group.cancelAll()
            }
            self.shutDown()
        } onGracefulShutdown: {
            Task { await self.finishCommands() }
        }
    }

    // MARK: Internals

    private func finishCommands() {
        self.commandSink.finish()
    }

    private func shutDown() {
        self.isShutDown = true
        self.issued.withLock { $0.removeAll() }
        for (_, continuations) in self.waiters {
            for continuation in continuations { continuation.resume(throwing: IdentityError.managerShutDown) }
        }
        self.waiters = [:]
        for continuation in self.subscribers.values.flatMap(\.values) { continuation.finish() }
        self.subscribers = [:]
    }

    private func removeSubscriber(_ identity: SPIFFEID, _ key: UUID) {
        self.subscribers[identity]?[key] = nil
    }

    private var scheduledDeadline: Date?

    private func perform(_ actions: StateMachine.Actions) {
        for identity in actions.startSigning {
            self.commandSink.yield(.sign(identity))
        }
        if let certificate = actions.resumeWaiters {
            for continuation in self.waiters.removeValue(forKey: certificate.identity) ?? [] {
                continuation.resume(returning: certificate)
            }
        }
        if let error = actions.failWaiters, case .unavailable(let identity, _) = error {
            for continuation in self.waiters.removeValue(forKey: identity) ?? [] {
                continuation.resume(throwing: error)
            }
        }
        if let certificate = actions.publish {
            self.issued.withLock { $0[certificate.identity] = certificate }
            for continuation in (self.subscribers[certificate.identity] ?? [:]).values {
                continuation.yield(certificate)
            }
        }
        // Keep a timer pending for the earliest deadline. When it fires, the next one is
        // scheduled; a timer whose deadline moved later fires once and finds nothing due.
        if let deadline = self.machine.nextDeadline, self.scheduledDeadline.map({ deadline < $0 }) ?? true {
            self.scheduledDeadline = deadline
            self.commandSink.yield(.timer(deadline))
        }
    }

    private func timerFired(_ deadline: Date) {
        let now = self.clock.now
        if self.scheduledDeadline == deadline { self.scheduledDeadline = nil }
        self.perform(self.machine.tick(now: now))
    }

    private func sign(_ identity: SPIFFEID) async {
        let lifetime = self.machine.configuration.certificateLifetime
        let result: Result<WorkloadCertificate, IdentityError>
        do {
            let csr = try IdentityCSR(identity: identity)
            let chain = try await self.provider.signCertificate(csr, lifetime: lifetime)
            result = .success(try WorkloadCertificate(identity: identity, privateKey: csr.privateKey, chain: chain))
        } catch {
            result = .failure(error)
        }
        let now = self.clock.now
        switch result {
        case .success(let certificate):
            self.logger.debug("issued certificate", metadata: [
                "identity": "\(identity)", "notAfter": "\(certificate.notValidAfter)",
            ])
            self.perform(self.machine.signingSucceeded(identity, certificate: certificate, now: now))
        case .failure(let error):
            self.logger.warning("certificate signing failed", metadata: [
                "identity": "\(identity)", "error": "\(error)",
            ])
            let jitter = Double.random(in: -1...1)
            self.perform(self.machine.signingFailed(identity, error: error, jitter: jitter, now: now))
        }
    }
}
