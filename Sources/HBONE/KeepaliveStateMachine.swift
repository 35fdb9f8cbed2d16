/// HBONE connection liveness as a value type (ztunnel `src/proxy/h2.rs` `do_ping_pong`).
///
/// Both ends send an opaque PING every `interval`, independent of data flow, the first
/// one `interval` after the connection starts. If no PING ACK has arrived within
/// `timeout` of the oldest unanswered PING, the connection is dead. RFC 9113 §6.7: a
/// PING ACK must echo the opaque data of the PING it answers, so unrelated ACKs are
/// ignored.
///
/// Time is passed in as a monotonic offset (`Duration` since any fixed origin), so the
/// machine is tested without clocks; the handler feeds it from its event loop.
struct KeepaliveStateMachine: Sendable {
    enum Action: Equatable, Sendable {
        /// Nothing to do.
        case none
        /// Send a PING with this opaque payload.
        case sendPing(UInt64)
        /// No ACK in time: close the connection.
        case declareDead
    }

    private let interval: Duration
    private let timeout: Duration
    private var nextPingAt: Duration
    private var outstanding: (payload: UInt64, sentAt: Duration)?
    private var counter: UInt64 = 0
    private(set) var isDead = false

    init(interval: Duration, timeout: Duration, now: Duration) {
        self.interval = interval
        self.timeout = timeout
        self.nextPingAt = now + interval
    }

    /// When the handler should call ``tick(now:)`` next.
    var nextDeadline: Duration {
        if let outstanding { return min(self.nextPingAt, outstanding.sentAt + self.timeout) }
        return self.nextPingAt
    }

    /// Called when the timer fires.
    mutating func tick(now: Duration) -> Action {
        guard !self.isDead else { return .none }
        if let outstanding, now >= outstanding.sentAt + self.timeout {
            self.isDead = true
            return .declareDead
        }
        guard now >= self.nextPingAt else { return .none }
        self.nextPingAt = now + self.interval
        // Keep measuring from the oldest unanswered PING: a new PING must not reset the deadline.
        if self.outstanding != nil { return .none }
        self.counter &+= 1
        let payload = 0x4842_4F4E_0000_0000 | self.counter
        self.outstanding = (payload, now)
        return .sendPing(payload)
    }

    /// A PING ACK arrived with `payload`.
    mutating func pingAckReceived(_ payload: UInt64) {
        if let outstanding, outstanding.payload == payload { self.outstanding = nil }
    }
}
