/// The pool's bookkeeping as a value type (ztunnel `src/proxy/pool.rs`): which
/// connections exist per key, how many streams each carries, who is connecting.
///
/// Rules:
/// - A connection is reused while it carries fewer than `maximumStreams` streams.
/// - **Single flight**: while one connect for a key is in progress, further checkouts
///   wait for it instead of connecting too, so N concurrent opens to a new key make
///   exactly one TLS connection (ztunnel#864, fixed in #931).
/// - When every connection of a key is full, the next checkout connects again.
/// - Broken or GOAWAY'd connections are removed; idle ones are evicted after a timeout.
struct PoolStateMachine<Key: Hashable & Sendable>: Sendable {
    typealias ConnectionID = Int

    enum Checkout: Equatable, Sendable {
        /// Open a stream on this connection (its stream count was taken).
        case use(ConnectionID)
        /// Another checkout is connecting for this key: wait for it, then check out again.
        case wait
        /// Connect a new connection for this key.
        case connect
    }

    private struct Connection: Sendable {
        var streams: Int
        var maximumStreams: Int
        var idleSince: Duration?
    }

    private struct Entry: Sendable {
        var connections: [ConnectionID: Connection] = [:]
        var connecting = false

        /// The lowest-numbered connection with room takes the stream.
        mutating func checkout() -> Checkout {
            var chosen: ConnectionID?
            for (id, connection) in self.connections where connection.streams < connection.maximumStreams {
                if chosen.map({ id < $0 }) ?? true { chosen = id }
            }
            if let id = chosen {
                self.connections[id]!.streams += 1
                self.connections[id]!.idleSince = nil
                return .use(id)
            }
            if self.connecting { return .wait }
            self.connecting = true
            return .connect
        }
    }

    private var entries: [Key: Entry] = [:]
    private var nextID: ConnectionID = 0

    /// Connections currently pooled for `key`.
    func connectionCount(for key: Key) -> Int { self.entries[key]?.connections.count ?? 0 }

    /// Streams currently open on all connections of `key`.
    func streamCount(for key: Key) -> Int { self.entries[key]?.connections.values.reduce(0) { $0 + $1.streams } ?? 0 }

    mutating func checkout(_ key: Key) -> Checkout {
        // Modified in place: a copy of the entry would copy its dictionary on write.
        self.entries[key, default: Entry()].checkout()
    }

    /// The connect for `key` succeeded; the connection starts with the connector's stream.
    mutating func connected(_ key: Key, maximumStreams: Int) -> ConnectionID {
        self.nextID += 1
        var entry = self.entries[key] ?? Entry()
        entry.connecting = false
        entry.connections[self.nextID] = Connection(streams: 1, maximumStreams: max(1, maximumStreams), idleSince: nil)
        self.entries[key] = entry
        return self.nextID
    }

    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2) arrived for `id`:
    /// it takes at most `maximumStreams` streams from now on (ztunnel: the lower of its own
    /// limit and the peer's). Streams it already carries are not moved; 0 takes it out of
    /// rotation without closing it.
    mutating func limit(_ key: Key, _ id: ConnectionID, maximumStreams: Int) {
        self.entries[key]?.connections[id]?.maximumStreams = max(0, maximumStreams)
    }

    /// The connect for `key` failed; waiters should be failed too.
    mutating func connectFailed(_ key: Key) {
        self.entries[key]?.connecting = false
        self.dropIfEmpty(key)
    }

    /// A stream on `id` ended. Returns whether the connection became idle.
    @discardableResult
    mutating func release(_ key: Key, _ id: ConnectionID, now: Duration) -> Bool {
        guard var connection = self.entries[key]?.connections[id] else { return false }
        connection.streams = max(0, connection.streams - 1)
        if connection.streams == 0 { connection.idleSince = now }
        self.entries[key]!.connections[id] = connection
        return connection.streams == 0
    }

    /// When the connection idle the longest reaches `timeout`, or `nil` when none is idle:
    /// one eviction timer for the pool, not one per released stream.
    func nextEviction(timeout: Duration) -> Duration? {
        var earliest: Duration?
        for entry in self.entries.values {
            for connection in entry.connections.values {
                if let idleSince = connection.idleSince, earliest.map({ idleSince < $0 }) ?? true { earliest = idleSince }
            }
        }
        return earliest.map { $0 + timeout }
    }

    /// `id` closed or received GOAWAY: never hand it out again.
    mutating func remove(_ key: Key, _ id: ConnectionID) {
        self.entries[key]?.connections[id] = nil
        self.dropIfEmpty(key)
    }

    /// Removes and returns connections idle since at least `timeout` before `now`.
    mutating func evictIdle(now: Duration, timeout: Duration) -> [(Key, ConnectionID)] {
        var evicted: [(Key, ConnectionID)] = []
        for (key, entry) in self.entries {
            for (id, connection) in entry.connections {
                if let idleSince = connection.idleSince, now - idleSince >= timeout { evicted.append((key, id)) }
            }
        }
        for (key, id) in evicted { self.remove(key, id) }
        return evicted
    }

    private mutating func dropIfEmpty(_ key: Key) {
        if let entry = self.entries[key], entry.connections.isEmpty, !entry.connecting { self.entries[key] = nil }
    }
}
