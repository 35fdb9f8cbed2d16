internal import NIOCore
internal import NIOPosix

#if canImport(Glibc)
internal import Glibc
#endif

/// `close(2)`.
@discardableResult
func closeDescriptor(_ descriptor: Int32) -> Int32 { close(descriptor) }

/// Sleeps on a SwiftNIO event-loop timer (decision D10); cancellation ends it early.
func zdsPause(_ duration: Duration) async throws {
    let loop = MultiThreadedEventLoopGroup.singleton.any()
    let promise = loop.makePromise(of: Void.self)
    let nanoseconds = duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    let scheduled = loop.scheduleTask(in: .nanoseconds(nanoseconds)) { promise.succeed() }
    try await withTaskCancellationHandler {
        try await promise.futureResult.get()
    } onCancel: {
        scheduled.cancel()
        promise.fail(CancellationError())
    }
}
