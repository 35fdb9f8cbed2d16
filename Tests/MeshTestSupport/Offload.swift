import Foundation

/// Runs blocking work (a child process, a blocking socket, a wait loop) on a thread of its
/// own, never on the Swift concurrency pool.
///
/// That pool has only as many threads as cores (two in CI), and tests run in parallel: one
/// test blocking a pool thread stalls every task in the process — the server under test,
/// a TLS verification callback, the other tests' timers. NIO's shared thread pool is no
/// better (also one thread per core, and long-running peers would queue the rest), so each
/// call gets a fresh thread: tests are I/O bound, and a thread costs far less than a stall.
public func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
