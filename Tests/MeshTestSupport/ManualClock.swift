public import Foundation
public import MeshIdentity
internal import Synchronization

/// An ``IdentityClock`` that only moves when a test advances it.
///
/// Sleepers are resumed, in deadline order, when ``advance(by:)`` or ``advance(to:)``
/// moves the time past their deadline; cancelling a sleeper resumes it with
/// `CancellationError`. ``waitForSleepers(count:)`` lets a test wait until the code
/// under test has armed its timers, so nothing depends on real time.
public final class ManualClock: IdentityClock {
    private struct Sleeper {
        var deadline: Date
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: Date
        var sleepers: [UUID: Sleeper] = [:]
    }

    private let state: Mutex<State>

    /// Starts the clock at `start`.
    public init(start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        self.state = Mutex(State(now: start))
    }

    public var now: Date { self.state.withLock { $0.now } }

    /// Number of tasks currently sleeping on the clock.
    public var sleeperCount: Int { self.state.withLock { $0.sleepers.count } }

    /// The earliest deadline a task sleeps until.
    public var earliestDeadline: Date? { self.state.withLock { $0.sleepers.values.map(\.deadline).min() } }

    public func sleep(until deadline: Date) async throws {
        let id = UUID()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: Bool = self.state.withLock { state in
                    if deadline <= state.now || Task.isCancelled { return true }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return false
                }
                if resumeNow {
                    if Task.isCancelled {
                        continuation.resume(throwing: CancellationError())
                    } else {
                        continuation.resume()
                    }
                }
            }
        } onCancel: {
            let sleeper = self.state.withLock { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward by `interval` seconds and wakes every sleeper that is due.
    public func advance(by interval: TimeInterval) {
        self.advance(to: self.now + interval)
    }

    /// Moves time to `date` (never backwards) and wakes every sleeper that is due.
    public func advance(to date: Date) {
        let due: [Sleeper] = self.state.withLock { state in
            state.now = max(state.now, date)
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for key in due.keys { state.sleepers[key] = nil }
            return due.values.sorted { $0.deadline < $1.deadline }
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Waits (yielding, with a generous real-time bound) until at least `count` tasks sleep on the clock.
    public func waitForSleepers(count: Int = 1, timeout: Duration = .seconds(30)) async throws {
        try await eventually(timeout: timeout, "\(count) sleepers on the manual clock") { self.sleeperCount >= count }
    }
}
