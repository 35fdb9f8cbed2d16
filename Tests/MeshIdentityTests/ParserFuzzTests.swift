import Foundation
import MeshIdentity
import MeshTestSupport
import Testing
import X509

/// Random and mutated input to every identity parser: each call must return or throw
/// a typed error, never crash; mutated CSRs must never be signed.
@Suite("Parser fuzzing")
struct ParserFuzzTests {
    static let iterations = 3000

    @Test("certificate and CSR DER parsers", arguments: [UInt64(1), 2, 3])
    func der(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let ca = try CertificateAuthority.selfSigned()
        let csr = try IdentityCSR(identity: spiffe("default", "sleep"))
        let certificateDER = PEM.der(try ca.sign(csr.request, for: csr.identity)[0])
        let csrDER = PEM.der(csr.request)
        var parsed = 0, rejected = 0
        for iteration in 0..<Self.iterations {
            await Task.yield() // a CPU-bound test on the shared pool: let the others in
            let input: [UInt8]
            switch iteration % 3 {
            case 0: input = random.mutate(certificateDER)
            case 1: input = random.mutate(csrDER)
            default: input = random.bytes(Int.random(in: 0...300, using: &random))
            }
            for parse in [{ _ = try PEM.certificate(der: input) }, { _ = try PEM.csr(der: input) }] as [() throws -> Void] {
                do {
                    try parse()
                    parsed += 1
                } catch is IdentityError {
                    rejected += 1
                } catch {
                    Issue.record("seed \(seed) iteration \(iteration): untyped error \(error)")
                }
            }
            if input != csrDER, let mutated = try? PEM.csr(der: input) {
                #expect(throws: IdentityError.self, "seed \(seed) iteration \(iteration): a mutated CSR was signed") {
                    _ = try ca.sign(mutated, for: csr.identity)
                }
            }
        }
        #expect(rejected > Self.iterations, "most mutations are rejected (parsed \(parsed), rejected \(rejected))")
    }

    @Test("PEM parsers: certificates, bundles, CSRs, keys and trust bundles", arguments: [UInt64(7), 8])
    func pem(seed: UInt64) async throws {
        var random = SeededGenerator(seed: seed)
        let ca = try CertificateAuthority.selfSigned()
        let csr = try IdentityCSR(identity: spiffe("default", "sleep"))
        let samples = [
            ca.trustBundle.pem, csr.pem, try PEM.encode(csr.privateKey),
            PEM.encode(try ca.sign(csr.request, for: csr.identity)),
        ].map { Array($0.utf8) }
        for iteration in 0..<Self.iterations {
            await Task.yield() // a CPU-bound test on the shared pool: let the others in
            let input = String(decoding: random.mutate(samples[iteration % samples.count]), as: UTF8.self)
            let parsers: [() throws -> Void] = [
                { _ = try PEM.certificate(input) }, { _ = try PEM.certificates(input) },
                { _ = try PEM.csr(input) }, { _ = try PEM.privateKey(input) }, { _ = try TrustBundle(pem: input) },
            ]
            for parse in parsers {
                do {
                    try parse()
                } catch is IdentityError {
                } catch {
                    Issue.record("seed \(seed) iteration \(iteration): untyped error \(error)")
                }
            }
        }
    }

    @Test("SPIFFE ID parser", arguments: [UInt64(11), 12])
    func spiffeIDs(seed: UInt64) async {
        var random = SeededGenerator(seed: seed)
        let valid = Array("spiffe://cluster.local/ns/default/sa/sleep".utf8)
        var accepted = 0
        for iteration in 0..<(Self.iterations * 3) {
            await Task.yield() // a CPU-bound test on the shared pool: let the others in
            let bytes = iteration % 2 == 0 ? random.mutate(valid) : random.bytes(Int.random(in: 0...60, using: &random))
            let input = String(decoding: bytes, as: UTF8.self)
            do {
                let id = try SPIFFEID(parsing: input)
                accepted += 1
                // Anything accepted must format back to exactly the input.
                #expect(id.uri == input, "seed \(seed): \(input.debugDescription)")
            } catch {
                #expect(!error.description.isEmpty)
            }
            _ = try? SPIFFEID(principal: input)
            _ = try? TrustDomain(input)
        }
        #expect(accepted > 0, "some mutations (e.g. a changed letter) stay valid")
    }
}
