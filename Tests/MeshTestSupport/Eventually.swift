/// An error thrown by ``eventually(timeout:_:_:)`` when the condition never held.
public struct TimedOut: Error, CustomStringConvertible {
    /// What was awaited.
    public let what: String
    public var description: String { "timed out waiting for \(self.what)" }
}

/// Polls `condition` (yielding between polls) until it holds or `timeout` of real time passed.
///
/// For waiting on *other tasks* to reach a state; never for waiting on protocol time,
/// which tests control with ``ManualClock``.
public func eventually(
    timeout: Duration = .seconds(10),
    _ what: @autoclosure () -> String,
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(2))
    }
    if try await condition() { return }
    throw TimedOut(what: what())
}
