import InternetAddress
import HBONE
import Testing

@Suite("HBONE addresses and request metadata")
struct HBONEMetadataTests {
    @Test("authorities: IPv4 plain, IPv6 bracketed, everything else rejected")
    func authorities() throws {
        let v4 = try #require(HBONEAddress(authority: "10.0.0.2:8080"))
        #expect(v4.description == "10.0.0.2:8080")
        let v6 = try #require(HBONEAddress(authority: "[fd00::1]:15008"))
        #expect(v6.description == "[fd00::1]:15008")
        #expect(v6.ip.isIPv6)
        for bad in ["10.0.0.2", "10.0.0.2:", "10.0.0.2:0", "10.0.0.2:65536", "fd00::1:80", "[10.0.0.2]:80",
            "[fd00::1]80", "example.com:80", "10.0.0.256:80", ":80", "", "10.0.0.2:8a", "10.0.0.2:+80"]
        {
            #expect(HBONEAddress(authority: bad) == nil, "\(bad)")
        }
        let mapped = try #require(IPAddress("::ffff:127.0.0.1"))
        #expect(mapped.unmapped == IPAddress("127.0.0.1"))
    }

    @Test("authorities: the byte-level parser agrees with the textual grammar on 20 000 damaged values")
    func authorityParserAgreesWithGrammar() {
        // The grammar, written plainly: `a.b.c.d:port` or `[v6]:port`, port 1–65535 in digits.
        func reference(_ text: String) -> HBONEAddress? {
            let host: Substring
            let port: Substring
            if text.hasPrefix("[") {
                guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
                host = text[text.index(after: text.startIndex)..<close]
                port = text[text.index(close, offsetBy: 2)...]
            } else {
                let parts = text.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count == 2 else { return nil }
                host = parts[0]
                port = parts[1]
            }
            guard (1...5).contains(port.count), port.allSatisfy({ ("0"..."9").contains($0) }),
                let value = UInt16(port), value != 0, let ip = IPAddress(String(host)), ip.isIPv6 == text.hasPrefix("[")
            else { return nil }
            return HBONEAddress(ip: ip, port: value)
        }
        let seeds = ["10.0.0.2:8080", "[fd00::1]:15008", "127.0.0.1:1", "[::ffff:10.1.2.3]:65535", "192.168.255.255:443"]
        let alphabet = Array("0123456789.:[]abcdef+- é")
        var generator = SystemRandomNumberGenerator()
        var accepted = 0
        for _ in 0..<20_000 {
            var characters = Array(seeds.randomElement(using: &generator)!)
            for _ in 0..<Int.random(in: 0...2, using: &generator) {
                let position = Int.random(in: 0...characters.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0 where position < characters.count: characters.remove(at: position)
                case 1 where position < characters.count: characters[position] = alphabet.randomElement(using: &generator)!
                default: characters.insert(alphabet.randomElement(using: &generator)!, at: position)
                }
            }
            let text = String(characters)
            let parsed = HBONEAddress(authority: text)
            #expect(parsed == reference(text), "\(text)")
            if parsed != nil { accepted += 1 }
        }
        #expect((2_000...18_000).contains(accepted), "accepted \(accepted) of 20 000")
    }

    @Test("forwarded: for= quoted with brackets for IPv6, host= when a service was targeted")
    func forwarded() throws {
        var metadata = HBONERequestMetadata(forwardedFor: HBONEAddress(authority: "[fd00::7]:41234"))
        #expect(metadata.forwardedHeader == #"for="[fd00::7]:41234""#)
        metadata.forwardedHost = "reviews.default.svc.cluster.local"
        #expect(metadata.forwardedHeader == #"for="[fd00::7]:41234";host=reviews.default.svc.cluster.local"#)
        let parsed = HBONERequestMetadata.parseForwarded(#"for="10.1.2.3:5555";host=x.svc, for="1.1.1.1:1""#)
        #expect(parsed.for == HBONEAddress(authority: "10.1.2.3:5555"))
        #expect(parsed.host == "x.svc")
        #expect(HBONERequestMetadata.parseForwarded("garbage").for == nil)
    }

    @Test("baggage: ztunnel's keys in order, empty fields omitted, parsed back")
    func baggage() {
        let baggage = HBONERequestMetadata.Baggage(
            clusterName: "Kubernetes", namespace: "default", workloadKind: "deployment", workloadName: "sleep",
            serviceName: "sleep", serviceVersion: "v1", region: nil, zone: ""
        )
        let value = baggage.headerValue
        #expect(value == "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1")
        #expect(HBONERequestMetadata.Baggage(headerValue: value) == HBONERequestMetadata.Baggage(
            clusterName: "Kubernetes", namespace: "default", workloadKind: "deployment", workloadName: "sleep",
            serviceName: "sleep", serviceVersion: "v1"
        ))
        #expect(HBONERequestMetadata.Baggage(headerValue: "junk,=x,a=,cloud.region=eu;prop=1").region == "eu")
        // Members that are only properties (found by fuzzing: `;` trapped the server).
        for value in [";", ",;", ";p=1,service.name=a", "service.name=a,;;", " ; "] {
            let parsed = HBONERequestMetadata.Baggage(headerValue: value)
            #expect(parsed.serviceName == (value.contains("service.name=a") ? "a" : nil), "\(value)")
        }
    }

    @Test("traceparent: W3C version 00, random ids, strict parsing")
    func traceParent() throws {
        let random = HBONERequestMetadata.TraceParent.random()
        let text = random.description
        #expect(text.count == 55)
        #expect(text.hasPrefix("00-") && text.hasSuffix("-00"))
        #expect(HBONERequestMetadata.TraceParent(headerValue: text) == random)
        let fixed = try #require(HBONERequestMetadata.TraceParent(headerValue: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        #expect(fixed.parentID == 0x00f0_67aa_0ba9_02b7)
        #expect(fixed.flags == 1)
        for bad in ["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-short-00f067aa0ba902b7-01", ""]
        {
            #expect(HBONERequestMetadata.TraceParent(headerValue: bad) == nil, "\(bad)")
        }
        let known = HBONERequestMetadata.TraceParent(traceID: (1, 0xabc), parentID: 0xf0, flags: 0x1f)
        #expect(known.description == "00-00000000000000010000000000000abc-00000000000000f0-1f")
        #expect(HBONERequestMetadata.Baggage().headerValue == "")
    }

    @Test("traceparent: the byte-level parser accepts exactly what the W3C grammar does (20 000 damaged values)")
    func traceParentAgreesWithGrammar() {
        var generator = SystemRandomNumberGenerator()
        let damage = Array("0123456789abcdefABCDEF-x é")
        var accepted = 0
        for _ in 0..<20_000 {
            var characters = Array(HBONERequestMetadata.TraceParent.random().description)
            for _ in 0..<Int.random(in: 0...2, using: &generator) {
                characters[Int.random(in: 0..<characters.count, using: &generator)] = damage.randomElement(using: &generator)!
            }
            switch Int.random(in: 0..<20, using: &generator) {
            case 0: characters.removeLast()
            case 1: characters.append("0")
            case 2: characters = Array("00-00000000000000000000000000000000-" + String(characters.suffix(19)))
            default: break
            }
            let text = String(characters)
            let parsed = HBONERequestMetadata.TraceParent(headerValue: text)
            #expect((parsed != nil) == Self.grammarAccepts(text), "\(text)")
            if let parsed {
                accepted += 1
                #expect(parsed.description == text)
            }
        }
        // Both outcomes are exercised, not just one.
        #expect((4_000...16_000).contains(accepted), "accepted \(accepted) of 20 000")
    }

    /// W3C Trace Context §3.2.2, read at the string level: version `00`, 32 and 16 lower-case
    /// hex digits, 2 for flags, neither id all zeros.
    private static func grammarAccepts(_ value: String) -> Bool {
        let parts = value.split(separator: "-", omittingEmptySubsequences: false)
        let lowerHex = Set("0123456789abcdef")
        guard parts.count == 4, parts[0] == "00", parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
            parts.allSatisfy({ $0.allSatisfy(lowerHex.contains) })
        else { return false }
        return parts[1].contains { $0 != "0" } && parts[2].contains { $0 != "0" }
    }
}
