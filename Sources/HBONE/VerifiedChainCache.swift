internal import NIOCore
internal import NIOConcurrencyHelpers
internal import MeshIdentity
internal import X509
internal import Foundation

/// Remembers peer chains that passed ``TrustBundle/verify(chain:usage:trustDomain:at:)``,
/// so a peer that opens many connections with the same certificate (every pod does, for a
/// day) is path-validated once rather than on every handshake.
///
/// Only chain validation is cached — the result is a pure function of the chain's bytes,
/// the trust anchors, the usage, the required trust domain and the time. Proof that the
/// peer holds the leaf's key (the TLS 1.3 CertificateVerify signature) is still checked by
/// BoringSSL in every handshake. A hit must match the chain byte for byte, the same roots,
/// usage and trust domain, and the time must lie inside the validity window of every
/// certificate involved (the roots included); anything else is a miss and a full
/// verification. Failures are never cached.
final class VerifiedChainCache: Sendable {
    private struct Key: Hashable {
        var chain: [[UInt8]]
        var usage: TrustBundle.Usage
        var trustDomain: TrustDomain?
    }

    private struct Entry {
        var roots: [Certificate]
        var identity: SPIFFEID
        var validFrom: Date
        var validUntil: Date
    }

    /// Entries kept at most (a node serves a few hundred identities). Default 1024.
    let capacity: Int
    private let entries = NIOLockedValueBox([Key: Entry]())

    init(capacity: Int = 1024) {
        self.capacity = capacity
    }

    /// The identity verified earlier for exactly this chain, bundle, usage and trust domain,
    /// if the verification still holds at `time`.
    func identity(
        chain: [[UInt8]], bundle: TrustBundle, usage: TrustBundle.Usage, trustDomain: TrustDomain?, at time: Date
    ) -> SPIFFEID? {
        let key = Key(chain: chain, usage: usage, trustDomain: trustDomain)
        guard let entry = self.entries.withLockedValue({ $0[key] }),
              entry.validFrom <= time, time < entry.validUntil, entry.roots == bundle.roots else { return nil }
        return entry.identity
    }

    /// Records a successful verification of `certificates` (parsed from `chain`).
    func insert(
        chain: [[UInt8]], certificates: [Certificate], bundle: TrustBundle, usage: TrustBundle.Usage,
        trustDomain: TrustDomain?, identity: SPIFFEID, now: Date
    ) {
        let involved = certificates + bundle.roots
        let entry = Entry(
            roots: bundle.roots, identity: identity,
            validFrom: involved.map(\.notValidBefore).max() ?? now,
            validUntil: involved.map(\.notValidAfter).min() ?? now
        )
        let key = Key(chain: chain, usage: usage, trustDomain: trustDomain)
        self.entries.withLockedValue { entries in
            if entries.count >= self.capacity, entries[key] == nil {
                entries = entries.filter { now < $0.value.validUntil }
                if entries.count >= self.capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[key] = entry
        }
    }

    /// How many verifications are remembered.
    var count: Int { self.entries.withLockedValue { $0.count } }
}
