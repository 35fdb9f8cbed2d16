internal import Foundation

extension CertificateManager {
    /// The certificate manager's bookkeeping as a pure value type: which identities
    /// exist, what state each is in, what is queued for signing, and when each is due.
    ///
    /// Every method takes the current time and returns what the manager must do
    /// (start signings, resume waiters, notify subscribers); it performs no I/O and
    /// never reads a clock, so its rules are tested directly.
    ///
    /// ### Rules (ztunnel `src/identity/manager.rs`, `src/tls/certificate.rs`)
    /// - At most `maximumConcurrentSignings` CSRs are in flight; the rest queue by
    ///   priority (real-time > warm-up > background), first come first served within one.
    /// - After a success the identity is due again at `notBefore + fraction × lifetime`.
    /// - After a failure a still-valid certificate is kept; the retry is due after an
    ///   exponential backoff (×2, jittered, capped) but never later than the expiry.
    /// - Without a valid certificate a failure makes the identity *unavailable*; waiters fail.
    struct StateMachine: Sendable {
        struct Entry: Sendable {
            var certificate: WorkloadCertificate?
            var lastError: IdentityError?
            var phase: Phase
            var retryDelay: Duration?
        }

        enum Phase: Sendable, Equatable {
            /// Nothing to do until `due` (nil: never, e.g. unavailable without retry).
            case idle(due: Date?)
            /// Waiting for a signing slot.
            case queued(Priority)
            /// A CSR is in flight.
            case signing
        }

        /// What the manager must do after an event.
        struct Actions: Sendable, Equatable {
            /// Identities whose signing should start now.
            var startSigning: [SPIFFEID] = []
            /// Resume this identity's waiters with its certificate.
            var resumeWaiters: WorkloadCertificate?
            /// Fail this identity's waiters with the error.
            var failWaiters: IdentityError?
            /// Tell subscribers about a new certificate.
            var publish: WorkloadCertificate?
        }

        let configuration: Configuration
        private(set) var entries: [SPIFFEID: Entry] = [:]
        private var queue: [(priority: Priority, sequence: Int, identity: SPIFFEID)] = []
        private var sequence = 0
        private(set) var inFlight = 0

        init(configuration: Configuration) {
            self.configuration = configuration
        }

        /// The public view of one identity.
        func state(of identity: SPIFFEID, now: Date) -> State? {
            guard let entry = self.entries[identity] else { return nil }
            if let certificate = entry.certificate, certificate.isValid(at: now) { return .available(certificate) }
            if let error = entry.lastError, entry.phase != .signing { return .unavailable(error) }
            return .initializing
        }

        /// The earliest time at which ``tick(now:)`` has work.
        var nextDeadline: Date? {
            self.entries.values.compactMap { entry -> Date? in
                if case .idle(let due) = entry.phase { return due }
                return nil
            }.min()
        }

        /// A caller wants `identity`'s certificate. Returns the certificate if it is usable
        /// now, otherwise the caller must wait (and the actions may start a signing).
        mutating func request(
            _ identity: SPIFFEID, priority: Priority, now: Date
        ) -> (certificate: WorkloadCertificate?, actions: Actions) {
            var entry = self.entries[identity] ?? Entry(certificate: nil, lastError: nil, phase: .idle(due: now))
            if let certificate = entry.certificate, certificate.isValid(at: now) {
                self.entries[identity] = entry
                return (certificate, Actions())
            }
            switch entry.phase {
            case .signing:
                break
            case .queued(let queuedPriority):
                if priority > queuedPriority {
                    self.queue.removeAll { $0.identity == identity }
                    entry.phase = .queued(priority)
                    self.enqueue(identity, priority)
                }
            case .idle:
                // A caller is waiting: do not sit out a backoff for it.
                entry.phase = .queued(priority)
                self.enqueue(identity, priority)
            }
            self.entries[identity] = entry
            return (nil, Actions(startSigning: self.dequeueStartable()))
        }

        /// Due identities join the background queue.
        mutating func tick(now: Date) -> Actions {
            var actions = Actions()
            for (identity, var entry) in self.entries {
                guard case .idle(let due?) = entry.phase, due <= now else { continue }
                if let certificate = entry.certificate, !certificate.isValid(at: now), entry.lastError == nil {
                    entry.lastError = .unavailable(identity: identity, reason: "certificate expired")
                }
                entry.phase = .queued(.background)
                self.entries[identity] = entry
                self.enqueue(identity, .background)
            }
            actions.startSigning = self.dequeueStartable()
            return actions
        }

        /// A signing finished with a certificate.
        mutating func signingSucceeded(_ identity: SPIFFEID, certificate: WorkloadCertificate, now: Date) -> Actions {
            self.inFlight -= 1
            var actions = Actions()
            if var entry = self.entries[identity], entry.phase == .signing {
                entry.certificate = certificate
                entry.lastError = nil
                entry.retryDelay = nil
                entry.phase = .idle(due: certificate.refreshTime(fraction: self.configuration.refreshFraction))
                self.entries[identity] = entry
                actions.resumeWaiters = certificate
                actions.publish = certificate
            }
            actions.startSigning = self.dequeueStartable()
            return actions
        }

        /// A signing failed. `jitter` is a random value in -1...1 scaled by the configured jitter.
        mutating func signingFailed(_ identity: SPIFFEID, error: IdentityError, jitter: Double, now: Date) -> Actions {
            self.inFlight -= 1
            var actions = Actions()
            if var entry = self.entries[identity], entry.phase == .signing {
                let backoff = self.configuration.backoff
                let base = entry.retryDelay.map { min($0 * backoff.multiplier, backoff.maximum) } ?? backoff.initial
                entry.retryDelay = base
                let jittered = min(base * (1 + backoff.jitter * jitter), backoff.maximum)
                var due = now + jittered.timeInterval
                if let certificate = entry.certificate, certificate.isValid(at: now) {
                    due = min(due, certificate.notValidAfter)
                } else {
                    actions.failWaiters = .unavailable(identity: identity, reason: error.description)
                }
                entry.lastError = error
                entry.phase = .idle(due: due)
                self.entries[identity] = entry
            }
            actions.startSigning = self.dequeueStartable()
            return actions
        }

        /// Stops managing `identity`; an in-flight signing's result is dropped.
        mutating func forget(_ identity: SPIFFEID) {
            self.entries[identity] = nil
            self.queue.removeAll { $0.identity == identity }
        }

        /// The retry delay currently applied to `identity` (for tests and the admin view).
        func retryDelay(of identity: SPIFFEID) -> Duration? { self.entries[identity]?.retryDelay }

        private mutating func enqueue(_ identity: SPIFFEID, _ priority: Priority) {
            self.sequence += 1
            self.queue.append((priority, self.sequence, identity))
        }

        private mutating func dequeueStartable() -> [SPIFFEID] {
            var started: [SPIFFEID] = []
            while self.inFlight < self.configuration.maximumConcurrentSignings, !self.queue.isEmpty {
                let best = self.queue.indices.min { lhs, rhs in
                    let l = self.queue[lhs], r = self.queue[rhs]
                    return l.priority != r.priority ? l.priority > r.priority : l.sequence < r.sequence
                }!
                let identity = self.queue.remove(at: best).identity
                self.entries[identity]?.phase = .signing
                self.inFlight += 1
                started.append(identity)
            }
            return started
        }
    }
}
