import MeshIdentity
import Testing
import Foundation

@Suite("SPIFFE IDs")
struct SPIFFEIDTests {
    @Test("parses Istio's form and formats it back")
    func roundTrip() throws {
        let id = try SPIFFEID(parsing: "spiffe://cluster.local/ns/default/sa/sleep")
        #expect(id.trustDomain.name == "cluster.local")
        #expect(id.namespace == "default")
        #expect(id.serviceAccount == "sleep")
        #expect(id.uri == "spiffe://cluster.local/ns/default/sa/sleep")
        #expect(id.principal == "cluster.local/ns/default/sa/sleep")
        #expect(try SPIFFEID(principal: id.principal) == id)
        #expect(SPIFFEID(id.description) == id)
    }

    @Test("round-trips through JSON as its URI")
    func codable() throws {
        let id = try SPIFFEID(parsing: "spiffe://example.org/ns/a-b/sa/c_d.e")
        let data = try JSONEncoder().encode([id])
        #expect(String(decoding: data, as: UTF8.self) == #"["spiffe:\/\/example.org\/ns\/a-b\/sa\/c_d.e"]"#)
        #expect(try JSONDecoder().decode([SPIFFEID].self, from: data) == [id])
        #expect(throws: (any Error).self) { try JSONDecoder().decode([SPIFFEID].self, from: Data(#"["spiffe://x/ns"]"#.utf8)) }
    }

    static let malformed: [(String, SPIFFEIDError.Reason)] = [
        ("http://cluster.local/ns/a/sa/b", .wrongScheme),
        ("SPIFFE://cluster.local/ns/a/sa/b", .wrongScheme),
        ("cluster.local/ns/a/sa/b", .wrongScheme),
        ("", .wrongScheme),
        ("spiffe:///ns/a/sa/b", .emptyTrustDomain),
        ("spiffe://cluster.local//a/sa/b", .emptySegment(position: 1)),
        ("spiffe://cluster.local/ns//sa/b", .emptySegment(position: 2)),
        ("spiffe://cluster.local/ns/a/sa/", .emptySegment(position: 4)),
        ("spiffe://cluster.local/ns/a/sa/b/", .emptySegment(position: 5)),
        ("spiffe://cluster.local/ns/a", .missingSegments),
        ("spiffe://cluster.local", .missingSegments),
        ("spiffe://cluster.local/ns/a/sa/b/extra", .extraSegments),
        ("spiffe://cluster.local/namespace/a/sa/b", .expectedKeyword("ns", found: "namespace")),
        ("spiffe://cluster.local/ns/a/serviceaccount/b", .expectedKeyword("sa", found: "serviceaccount")),
        ("spiffe://Cluster.local/ns/a/sa/b", .invalidCharacter("C")),
        ("spiffe://cluster.local:8080/ns/a/sa/b", .invalidCharacter(":")),
        ("spiffe://user@cluster.local/ns/a/sa/b", .invalidCharacter("@")),
        ("spiffe://cluster.local/ns/a b/sa/b", .invalidCharacter(" ")),
        ("spiffe://cluster.local/ns/a/sa/b%2F", .invalidCharacter("%")),
        ("spiffe://cluster.local/ns/a/sa/b?q=1", .invalidCharacter("?")),
        ("spiffe://cluster.local/ns/../sa/b", .dotSegment),
        ("spiffe://cluster.local/ns/./sa/b", .dotSegment),
        ("spiffe://cluster.local/ns/ünï/sa/b", .invalidCharacter("\u{C3}")),
    ]

    @Test("rejects every malformed form with its reason", arguments: malformed)
    func rejects(input: String, reason: SPIFFEIDError.Reason) {
        #expect(throws: SPIFFEIDError.self) { try SPIFFEID(parsing: input) }
        do {
            _ = try SPIFFEID(parsing: input)
        } catch {
            #expect(error.reason == reason, "\(input)")
            #expect(error.description.contains("invalid SPIFFE ID"))
        }
    }

    @Test("rejects oversize identities and trust domains")
    func oversize() {
        let longSA = String(repeating: "a", count: 2100)
        do {
            _ = try SPIFFEID(parsing: "spiffe://td/ns/x/sa/\(longSA)")
            Issue.record("a 2100-byte service account was accepted")
        } catch {
            #expect(error.reason == .oversize)
            #expect(error.input.count < 200, "the error quotes a truncated input")
        }
        do {
            _ = try TrustDomain(String(repeating: "d", count: 256))
            Issue.record("a 256-byte trust domain was accepted")
        } catch {
            #expect(error.reason == .oversize)
        }
        #expect(throws: Never.self) { _ = try TrustDomain(String(repeating: "d", count: 255)) }
    }

    @Test("principal form must not carry the scheme")
    func principalForm() {
        do {
            _ = try SPIFFEID(principal: "spiffe://cluster.local/ns/a/sa/b")
            Issue.record("accepted")
        } catch {
            #expect(error.reason == .unexpectedScheme)
        }
    }
}
