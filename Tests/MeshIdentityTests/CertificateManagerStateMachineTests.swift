import Foundation
@testable import MeshIdentity
import MeshTestSupport
import Testing

@Suite("Certificate manager state machine")
struct CertificateManagerStateMachineTests {
    typealias Machine = CertificateManager.StateMachine
    let ca: CertificateAuthority
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    init() throws {
        self.ca = try CertificateAuthority.selfSigned(now: self.start - 3600)
    }

    func certificate(_ identity: SPIFFEID, at now: Date) throws -> WorkloadCertificate {
        let csr = try IdentityCSR(identity: identity)
        return try WorkloadCertificate(
            identity: identity, privateKey: csr.privateKey, chain: self.ca.sign(csr.request, for: identity, now: now)
        )
    }

    func machine(concurrency: Int = 8) -> Machine {
        var configuration = CertificateManager.Configuration()
        configuration.maximumConcurrentSignings = concurrency
        return Machine(configuration: configuration)
    }

    @Test("first request starts a signing; later callers wait without starting another")
    func singleSigningPerIdentity() throws {
        var machine = self.machine()
        let id = spiffe("a", "b")
        let first = machine.request(id, priority: .realTime, now: self.start)
        #expect(first.certificate == nil)
        #expect(first.actions.startSigning == [id])
        #expect(machine.state(of: id, now: self.start) == .initializing)
        let second = machine.request(id, priority: .realTime, now: self.start)
        #expect(second.actions.startSigning.isEmpty)
        let cert = try self.certificate(id, at: self.start)
        let done = machine.signingSucceeded(id, certificate: cert, now: self.start)
        #expect(done.resumeWaiters == cert)
        #expect(done.publish == cert)
        #expect(machine.state(of: id, now: self.start) == .available(cert))
        #expect(machine.request(id, priority: .realTime, now: self.start).certificate == cert)
        #expect(machine.nextDeadline == cert.refreshTime())
    }

    @Test("due at half-life: tick before does nothing, tick at the refresh time queues a background signing")
    func refreshAtHalfLife() throws {
        var machine = self.machine()
        let id = spiffe("a", "b")
        _ = machine.request(id, priority: .realTime, now: self.start)
        let cert = try self.certificate(id, at: self.start)
        _ = machine.signingSucceeded(id, certificate: cert, now: self.start)
        let refresh = cert.refreshTime()
        // 24 h certificate back-dated 2 minutes: refresh 11 h 59 m after issuance (half of 24 h 2 m, minus 2 m).
        #expect(abs(refresh.timeIntervalSince(self.start) - (12 * 3600 - 60)) < 1)
        #expect(machine.tick(now: refresh - 1).startSigning.isEmpty)
        #expect(machine.tick(now: refresh).startSigning == [id])
        #expect(machine.state(of: id, now: refresh) == .available(cert), "the old certificate stays in use while rotating")
    }

    @Test("failure keeps a valid certificate; backoff doubles from 500 ms and is capped at 150 s")
    func backoff() throws {
        var machine = self.machine()
        let id = spiffe("a", "b")
        _ = machine.request(id, priority: .realTime, now: self.start)
        let cert = try self.certificate(id, at: self.start)
        _ = machine.signingSucceeded(id, certificate: cert, now: self.start)
        var now = cert.refreshTime()
        var delays: [Double] = []
        _ = machine.tick(now: now)
        for _ in 0..<12 {
            let failed = machine.signingFailed(id, error: .providerFailed("down"), jitter: 0, now: now)
            #expect(failed.failWaiters == nil)
            #expect(machine.state(of: id, now: now) == .available(cert))
            let due = try #require(machine.nextDeadline)
            delays.append((due.timeIntervalSince(now) * 1000).rounded() / 1000)
            now = due
            #expect(machine.tick(now: now).startSigning == [id])
        }
        #expect(delays == [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150])
        // Jitter never pushes a delay past the cap.
        let failed = machine.signingFailed(id, error: .providerFailed("down"), jitter: 1, now: now)
        #expect(failed.failWaiters == nil)
        #expect((try #require(machine.nextDeadline).timeIntervalSince(now)).rounded() == 150)
        // Success resets the backoff.
        _ = machine.tick(now: try #require(machine.nextDeadline))
        let fresh = try self.certificate(id, at: now)
        _ = machine.signingSucceeded(id, certificate: fresh, now: now)
        #expect(machine.retryDelay(of: id) == nil)
    }

    @Test("a retry is never scheduled past the certificate's expiry; after expiry the identity is unavailable")
    func neverPastExpiry() throws {
        var machine = self.machine()
        let id = spiffe("a", "b")
        _ = machine.request(id, priority: .realTime, now: self.start)
        let cert = try self.certificate(id, at: self.start)
        _ = machine.signingSucceeded(id, certificate: cert, now: self.start)
        let almostExpired = cert.notValidAfter - 0.2
        _ = machine.tick(now: almostExpired)
        _ = machine.signingFailed(id, error: .providerFailed("down"), jitter: 0, now: almostExpired)
        #expect(machine.nextDeadline == cert.notValidAfter)
        _ = machine.tick(now: cert.notValidAfter)
        let failed = machine.signingFailed(id, error: .providerFailed("down"), jitter: 0, now: cert.notValidAfter)
        #expect(failed.failWaiters != nil)
        #expect(machine.state(of: id, now: cert.notValidAfter) == .unavailable(.providerFailed("down")))
    }

    @Test("at most N signings in flight; real-time overtakes warm-up, which overtakes background")
    func concurrencyAndPriority() {
        var machine = self.machine(concurrency: 2)
        let ids = (0..<6).map { spiffe("ns", "sa\($0)") }
        #expect(machine.request(ids[0], priority: .background, now: self.start).actions.startSigning == [ids[0]])
        #expect(machine.request(ids[1], priority: .background, now: self.start).actions.startSigning == [ids[1]])
        #expect(machine.request(ids[2], priority: .background, now: self.start).actions.startSigning.isEmpty)
        #expect(machine.request(ids[3], priority: .warmup, now: self.start).actions.startSigning.isEmpty)
        #expect(machine.request(ids[4], priority: .realTime, now: self.start).actions.startSigning.isEmpty)
        #expect(machine.inFlight == 2)
        // ids[2] is upgraded to real time by a waiting connection, behind ids[4].
        _ = machine.request(ids[2], priority: .realTime, now: self.start)
        var order: [SPIFFEID] = []
        for finished in [ids[0], ids[1], ids[4], ids[2]] {
            order += machine.signingFailed(finished, error: .providerFailed("x"), jitter: 0, now: self.start).startSigning
        }
        #expect(order == [ids[4], ids[2], ids[3]])
    }

    @Test("forgetting an identity drops a late signing result")
    func forget() throws {
        var machine = self.machine()
        let id = spiffe("a", "b")
        _ = machine.request(id, priority: .realTime, now: self.start)
        machine.forget(id)
        let actions = machine.signingSucceeded(id, certificate: try self.certificate(id, at: self.start), now: self.start)
        #expect(actions.resumeWaiters == nil)
        #expect(machine.state(of: id, now: self.start) == nil)
        #expect(machine.inFlight == 0)
    }
}
