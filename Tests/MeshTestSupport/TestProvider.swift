public import MeshIdentity
public import X509
internal import Synchronization

/// A ``CertificateProvider`` for tests: signs with a real embedded CA, but can be told to
/// fail, and can hold signings at a gate to observe queueing and concurrency.
public final class TestProvider: CertificateProvider {
    private struct State {
        var failing = false
        var gated = false
        var held: [(id: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
        var nextID: UInt64 = 0
        var inFlight = 0
        var maximumInFlight = 0
        var attempts: [SPIFFEID] = []
        var successes = 0
    }

    private let state = Mutex(State())
    private let inner: EmbeddedCAProvider

    /// Signs with `authority`, reading time from `clock`.
    public init(authority: CertificateAuthority, clock: any IdentityClock) {
        self.inner = EmbeddedCAProvider(authority: authority, clock: clock)
    }

    /// While `true`, every signing fails with ``IdentityError/providerFailed(_:)``.
    public var failing: Bool {
        get { self.state.withLock { $0.failing } }
        set { self.state.withLock { $0.failing = newValue } }
    }

    /// While `true`, signings wait at the gate until ``release(_:)``.
    public var gated: Bool {
        get { self.state.withLock { $0.gated } }
        set { self.state.withLock { $0.gated = newValue } }
    }

    /// Signings currently between start and finish.
    public var inFlight: Int { self.state.withLock { $0.inFlight } }
    /// The most signings ever in flight at once.
    public var maximumInFlight: Int { self.state.withLock { $0.maximumInFlight } }
    /// Signings waiting at the gate.
    public var heldCount: Int { self.state.withLock { $0.held.count } }
    /// Identities in the order their signing started.
    public var attempts: [SPIFFEID] { self.state.withLock { $0.attempts } }
    /// Number of successful signings.
    public var successes: Int { self.state.withLock { $0.successes } }

    /// Lets `count` held signings proceed (all when `nil`).
    public func release(_ count: Int? = nil) {
        let released: [CheckedContinuation<Void, Never>] = self.state.withLock { state in
            let n = min(count ?? state.held.count, state.held.count)
            let released = state.held.prefix(n).map(\.continuation)
            state.held.removeFirst(n)
            return released
        }
        for continuation in released { continuation.resume() }
    }

    public func signCertificate(_ csr: IdentityCSR, lifetime: Duration) async throws(IdentityError) -> [Certificate] {
        let gated: Bool = self.state.withLock { state in
            state.inFlight += 1
            state.maximumInFlight = max(state.maximumInFlight, state.inFlight)
            state.attempts.append(csr.identity)
            return state.gated
        }
        if gated {
            // Cancellation opens the gate for this signing, so a failed test that cancels
            // the manager ends instead of waiting forever on a held continuation.
            let id: UInt64 = self.state.withLock { state in
                state.nextID += 1
                return state.nextID
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let resumeNow: Bool = self.state.withLock { state in
                        if !state.gated || Task.isCancelled { return true }
                        state.held.append((id, continuation))
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let held: CheckedContinuation<Void, Never>? = self.state.withLock { state in
                    guard let index = state.held.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.held.remove(at: index).continuation
                }
                held?.resume()
            }
        }
        defer { self.state.withLock { $0.inFlight -= 1 } }
        if self.failing { throw IdentityError.providerFailed("test CA is down") }
        let chain = try await self.inner.signCertificate(csr, lifetime: lifetime)
        self.state.withLock { $0.successes += 1 }
        return chain
    }
}
