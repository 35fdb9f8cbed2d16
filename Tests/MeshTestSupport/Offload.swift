internal import NIOPosix

/// Runs blocking work (a child process, a blocking socket) on NIO's thread pool instead of
/// the Swift concurrency pool, which has only as many threads as cores: blocking it stalls
/// every task, including the server under test.
public func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await NIOThreadPool.singleton.runIfActive(body)
}
