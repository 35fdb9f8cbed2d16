import Foundation
import MeshIdentity

/// An error thrown by ``eventually(timeout:_:_:)`` when the condition never held.
public struct TimedOut: Error, CustomStringConvertible {
    /// What was awaited.
    public let what: String
    public var description: String { "timed out waiting for \(self.what)" }
}

/// Polls `condition` (yielding between polls) until it holds or `timeout` of real time passed.
///
/// For waiting on *other tasks* to reach a state; never for waiting on protocol time,
/// which tests control with ``ManualClock``. The timeout only bounds a failing test: a
/// passing one returns as soon as the condition holds. It is generous because the whole
/// process can stall while tests run in parallel on two cores — CI once saw every suite
/// that started in the first seconds take 11.8 s, and three 10 s waits failed.
public func eventually(
    timeout: Duration = .seconds(30),
    _ what: @autoclosure () -> String,
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await pause(.milliseconds(2))
    }
    if try await condition() { return }
    throw TimedOut(what: what())
}

/// Sleeps for `duration` of real time on a SwiftNIO timer (``SystemIdentityClock``), never
/// on `Task.sleep`, whose libdispatch timers were seen to stop firing on Linux (D10).
public func pause(_ duration: Duration) async throws {
    let (seconds, attoseconds) = duration.components
    let interval = Double(seconds) + Double(attoseconds) / 1e18
    try await SystemIdentityClock().sleep(until: Date(timeIntervalSinceNow: interval))
}
