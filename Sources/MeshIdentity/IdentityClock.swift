public import Foundation

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

    public func sleep(until deadline: Date) async throws {
        let interval = deadline.timeIntervalSinceNow
        if interval > 0 {
            try await Task.sleep(for: .milliseconds(Int64((interval * 1000).rounded(.up))))
        } else {
            try Task.checkCancellation()
        }
    }
}
