internal import NIOConcurrencyHelpers
internal import NIOCore
internal import ServiceLifecycle

/// The address a listener bound to, published once by its `run()` and awaited by callers
/// that started it with port 0 (tests, `hbone-tunnel`'s `listening <port>` line).
final class BoundAddress: Sendable {
    private struct State {
        var result: Result<HBONEAddress, any Error>?
        var waiters: [CheckedContinuation<HBONEAddress, any Error>] = []
    }

    private let state = NIOLockedValueBox(State())

    /// The address if bound, else `nil`.
    var current: HBONEAddress? {
        self.state.withLockedValue { state in
            if case .success(let address) = state.result { return address }
            return nil
        }
    }

    /// Waits until the listener bound (or failed to).
    var value: HBONEAddress {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let result: Result<HBONEAddress, any Error>? = self.state.withLockedValue { state in
                    if let result = state.result { return result }
                    state.waiters.append(continuation)
                    return nil
                }
                if let result { continuation.resume(with: result) }
            }
        }
    }

    /// Records the outcome of binding and wakes every waiter.
    func publish(_ result: Result<HBONEAddress, any Error>) {
        let waiters: [CheckedContinuation<HBONEAddress, any Error>] = self.state.withLockedValue { state in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// Publishes the local address of a bound listener `channel`.
    func publish(listening channel: any Channel) {
        if let local = channel.localAddress, let address = HBONEAddress(socketAddress: local) {
            self.publish(.success(address))
        } else {
            self.publish(.failure(HBONEClientError.closed))
        }
    }
}

/// Waits until a listening channel closes, closing it on cancellation or graceful shutdown
/// (the listeners that need no drain: the forwarder and the transparent listeners).
func serveUntilShutdown(_ channel: any Channel) async {
    await withGracefulShutdownHandler {
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    } onGracefulShutdown: {
        channel.close(promise: nil)
    }
}
