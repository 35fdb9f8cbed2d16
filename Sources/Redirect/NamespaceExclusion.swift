internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#endif

/// Mutual exclusion for kernel work on one network namespace within this process.
///
/// `iptables-nft-restore --noflush` is not atomic against itself: two runs in one namespace
/// both read "no ISTIO chains", both declare them, and the second fails with "Chain already
/// exists" — after which ``InPodRedirection``'s rollback would remove what the first one
/// installed. Every ``InPodRedirection`` operation therefore holds its namespace's entry
/// here. Callers are on ``NetworkNamespace`` dedicated threads, so waiting blocks no event
/// loop and no Swift concurrency thread. Entries are dropped when their last user leaves,
/// so pods that come and go leave nothing behind.
enum NamespaceExclusion {
    /// A pthread mutex on the heap (its address must not move).
    ///
    /// `@unchecked Sendable` is safe: the pointer is written once in `init` and the mutex it
    /// points to is only used through `pthread_mutex_lock`/`unlock`, which are thread-safe.
    private final class Gate: @unchecked Sendable {
        let mutex: UnsafeMutablePointer<pthread_mutex_t>

        init() {
            self.mutex = .allocate(capacity: 1)
            self.mutex.initialize(to: pthread_mutex_t())
            pthread_mutex_init(self.mutex, nil)
        }

        deinit {
            pthread_mutex_destroy(self.mutex)
            self.mutex.deallocate()
        }
    }

    private struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private static let gates = Mutex<[Key: (gate: Gate, users: Int)]>([:])

    /// Runs `body` while no other thread of this process works on `namespace`.
    static func exclusively<Result>(_ namespace: NetworkNamespace, _ body: () throws -> Result) rethrows -> Result {
        let key = Key(device: namespace.device, inode: namespace.inode)
        let gate = Self.gates.withLock { table in
            var entry = table[key] ?? (Gate(), 0)
            entry.users += 1
            table[key] = entry
            return entry.gate
        }
        pthread_mutex_lock(gate.mutex)
        defer {
            pthread_mutex_unlock(gate.mutex)
            Self.gates.withLock { table in
                guard let entry = table[key] else { return }
                table[key] = entry.users == 1 ? nil : (entry.gate, entry.users - 1)
            }
        }
        return try body()
    }
}
