public import Foundation
internal import NIOCore
internal import NIOPosix

/// The wall clock the identity module reads and sleeps on.
///
/// Certificates are valid between two wall-clock instants, so this is a `Date`
/// clock rather than a `Swift.Clock`. It is injected everywhere time matters so
/// that rotation, backoff and expiry are tested by advancing a manual clock
/// instead of sleeping (see `ManualClock` in the test-support target).
public protocol IdentityClock: Sendable {
    /// The current time.
    var now: Date { get }
    /// Suspends until `deadline`; throws `CancellationError` if the task is cancelled first.
    func sleep(until deadline: Date) async throws
}

/// The system's wall clock.
public struct SystemIdentityClock: IdentityClock {
    /// Creates the clock.
    public init() {}

    public var now: Date { Date() }

    /// Sleeps on a SwiftNIO event-loop timer, not `Task.sleep`.
    ///
    /// `Task.sleep` on Linux goes through libdispatch's timer sources, and on this
    /// platform (Swift 6.3.1) we observed them stop firing for the whole process: the
    /// `CLOCK_BOOTTIME` timerfd fired once, its `EPOLLONESHOT` registration was never
    /// re-armed, and every later `Task.sleep` hung (Docs/decisions.md, D10). A rotation
    /// timer that never fires is an outage, so identity timers use NIO's event loop,
    /// which owns its own timerfd and is the loop the data path already depends on.
    public func sleep(until deadline: Date) async throws {
        let interval = deadline.timeIntervalSinceNow
        guard interval > 0 else {
            try Task.checkCancellation()
            return
        }
        let nanoseconds = Int64(min((interval * 1e9).rounded(.up), Double(Int64.max / 2)))
        let scheduled = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(nanoseconds)) {}
        try await withTaskCancellationHandler {
            do {
                try await scheduled.futureResult.get()
            } catch {
                throw CancellationError()
            }
        } onCancel: {
            scheduled.cancel()
        }
    }
}
