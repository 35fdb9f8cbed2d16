import Foundation
import MeshIdentity
import MeshTestSupport
import Testing
import X509

/// The certificate manager running for real (tasks, timers, a signing CA) on a manual clock.
@Suite("Certificate manager")
struct CertificateManagerTests {
    let clock = ManualClock(start: Date())
    let ca: CertificateAuthority
    let provider: TestProvider

    init() throws {
        self.ca = try CertificateAuthority.selfSigned(now: self.clock.now)
        self.provider = TestProvider(authority: self.ca, clock: self.clock)
    }

    func withManager(
        configuration: CertificateManager.Configuration = .init(),
        _ body: (CertificateManager) async throws -> Void
    ) async throws {
        let manager = CertificateManager(provider: self.provider, clock: self.clock, configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await manager.run() }
            defer { group.cancelAll() }
            try await body(manager)
        }
    }

    @Test("issues on first request, then rotates exactly at half-life and tells subscribers")
    func rotation() async throws {
        try await self.withManager { manager in
            let id = spiffe("default", "sleep")
            #expect(manager.validCertificate(for: id) == nil, "the fast path never starts issuance")
            #expect(self.provider.attempts.isEmpty)
            let first = try await manager.certificate(for: id)
            #expect(await manager.state(of: id) == .available(first))
            #expect(manager.validCertificate(for: id) == first)
            var updates = await manager.updates(for: id).makeAsyncIterator()
            try await self.clock.waitForSleepers()
            let refresh = first.refreshTime()
            #expect(self.clock.earliestDeadline == refresh)

            self.clock.advance(to: refresh - 1)
            for _ in 0..<50 { await Task.yield() }
            #expect(self.provider.attempts.count == 1, "nothing happens before half-life")
            #expect(try await manager.certificate(for: id) == first)

            self.clock.advance(to: refresh)
            let second = try #require(await updates.next())
            #expect(second.leaf.serialNumber != first.leaf.serialNumber)
            #expect(try await manager.certificate(for: id) == second)
            #expect(manager.validCertificate(for: id) == second, "the fast path sees the rotation")
            // And again at the new certificate's half-life.
            try await self.clock.waitForSleepers()
            self.clock.advance(to: second.refreshTime())
            let third = try #require(await updates.next())
            #expect(third.leaf.serialNumber != second.leaf.serialNumber)
            #expect(self.provider.successes == 3)
        }
    }

    @Test("keeps the old certificate while the CA fails, backs off with a 150 s cap, recovers")
    func caOutage() async throws {
        try await self.withManager { manager in
            let id = spiffe("default", "sleep")
            let original = try await manager.certificate(for: id)
            try await self.clock.waitForSleepers()
            self.provider.failing = true
            self.clock.advance(to: original.refreshTime())
            var delays: [Double] = []
            for attempt in 2...13 {
                try await eventually("attempt \(attempt)") { self.provider.attempts.count == attempt && self.provider.inFlight == 0 }
                #expect(await manager.state(of: id) == .available(original), "the still-valid certificate is kept")
                #expect(try await manager.certificate(for: id, priority: .background) == original)
                try await eventually("retry timer") { self.clock.earliestDeadline.map { $0 > self.clock.now } ?? false }
                let deadline = try #require(self.clock.earliestDeadline)
                delays.append(deadline.timeIntervalSince(self.clock.now))
                // The CA comes back before the last retry fires, so that retry succeeds.
                if attempt == 13 { self.provider.failing = false }
                self.clock.advance(to: deadline)
            }
            var base = 0.5
            for delay in delays {
                #expect(delay <= 150, "capped: \(delays)")
                #expect(delay >= base * 0.8 - 0.001 && delay <= min(base * 1.2, 150) + 0.001, "jittered ±20 % around \(base): \(delay)")
                base = min(base * 2, 150)
            }
            #expect(delays.suffix(3).allSatisfy { $0 >= 120 }, "the tail sits at the cap: \(delays)")

            try await eventually("recovery") { self.provider.successes == 2 }
            try await eventually("new certificate") {
                if case .available(let cert) = await manager.state(of: id) { return cert != original }
                return false
            }
            #expect(await manager.currentRetryDelay(of: id) == nil)
        }
    }

    @Test("a certificate that expires while the CA is down becomes unavailable, and callers get the error")
    func expiryDuringOutage() async throws {
        try await self.withManager { manager in
            let id = spiffe("default", "sleep")
            let original = try await manager.certificate(for: id)
            try await self.clock.waitForSleepers()
            self.provider.failing = true
            #expect(manager.validCertificate(for: id) == original)
            self.clock.advance(to: original.notValidAfter + 1)
            #expect(manager.validCertificate(for: id) == nil, "an expired certificate is never handed out")
            try await eventually("unavailable") {
                if case .unavailable = await manager.state(of: id) { return true }
                return false
            }
            await #expect {
                _ = try await manager.certificate(for: id)
            } throws: { error in
                if case IdentityError.unavailable(let failed, _) = error { return failed == id }
                return false
            }
        }
    }

    @Test("never more than 8 signings at once; all 20 identities are issued")
    func concurrencyLimit() async throws {
        self.provider.gated = true
        try await self.withManager { manager in
            let ids = (0..<20).map { spiffe("ns", "sa\($0)") }
            try await withThrowingTaskGroup(of: WorkloadCertificate.self) { group in
                defer {
                    self.provider.gated = false
                    self.provider.release()
                }
                for id in ids {
                    group.addTask { try await manager.certificate(for: id) }
                }
                try await eventually("8 held") { self.provider.heldCount == 8 }
                for _ in 0..<100 { await Task.yield() }
                #expect(self.provider.inFlight == 8)
                #expect(self.provider.heldCount == 8)
                while self.provider.successes < 20 {
                    self.provider.release()
                    try await pause(.milliseconds(1))
                }
                var issued = Set<SPIFFEID>()
                for try await certificate in group { issued.insert(certificate.identity) }
                #expect(issued == Set(ids))
            }
            #expect(self.provider.maximumInFlight == 8)
        }
    }

    @Test("a waiting connection overtakes queued warm-up work")
    func priorities() async throws {
        self.provider.gated = true
        try await self.withManager { manager in
            let busy = (0..<8).map { spiffe("busy", "sa\($0)") }
            let warm = [spiffe("warm", "a"), spiffe("warm", "b")]
            let urgent = spiffe("urgent", "conn")
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Open the gate on every exit: a failed expectation must not leave the
                // group waiting forever on held signings.
                defer {
                    self.provider.gated = false
                    self.provider.release()
                }
                for id in busy { group.addTask { _ = try await manager.certificate(for: id) } }
                try await eventually("slots full") { self.provider.heldCount == 8 }
                for id in warm { await manager.prefetch(id) }
                group.addTask { _ = try await manager.certificate(for: urgent, priority: .realTime) }
                try await eventually("urgent queued") { await manager.state(of: urgent) == .initializing }
                self.provider.gated = false
                self.provider.release(1)
                // Ungated, the urgent signing finishes at once and the two warm-ups follow,
                // so the count may already be past 9 when it is first read.
                try await eventually("next started") { self.provider.attempts.count >= 9 }
                self.provider.release()
                try await group.waitForAll()
            }
            try await eventually("warm-up done") { self.provider.attempts.count == 11 }
            #expect(Array(self.provider.attempts.suffix(3)) == [urgent] + warm)
        }
    }

    @Test("forgetting an identity fails its waiters and stops rotation")
    func forget() async throws {
        self.provider.gated = true
        try await self.withManager { manager in
            let id = spiffe("default", "gone")
            let waiting = Task { try await manager.certificate(for: id) }
            try await eventually("held") { self.provider.heldCount == 1 }
            await manager.forget(id)
            await #expect(throws: IdentityError.self) { _ = try await waiting.value }
            #expect(await manager.state(of: id) == nil)
            self.provider.release()
            // An issued identity that is forgotten is gone from the fast path too.
            self.provider.gated = false
            let kept = spiffe("default", "kept")
            #expect(try await manager.certificate(for: kept) == manager.validCertificate(for: kept))
            await manager.forget(kept)
            #expect(manager.validCertificate(for: kept) == nil)
        }
    }
}
