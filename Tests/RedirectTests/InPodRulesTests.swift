import Foundation
import MeshTestSupport
import Redirect
import Testing

/// The in-pod rule set against Istio's goldens (`cni/pkg/iptables/testdata/*.golden`,
/// quoted in shared/research/istio-cni.md §2.4), then applied to a real network namespace
/// with the real `iptables-restore`.
@Suite("In-pod redirection rules")
struct InPodRulesTests {
    /// `default.golden`: IPv4, DNS capture on.
    static let defaultGolden = """
    * mangle
    -N ISTIO_PRERT
    -N ISTIO_OUTPUT
    -A PREROUTING -j ISTIO_PRERT
    -A OUTPUT -j ISTIO_OUTPUT
    -A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
    -A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
    COMMIT
    * nat
    -N ISTIO_PRERT
    -N ISTIO_OUTPUT
    -A OUTPUT -j ISTIO_OUTPUT
    -A PREROUTING -j ISTIO_PRERT
    -A ISTIO_PRERT -s 169.254.7.127 -p tcp -m tcp -j ACCEPT
    -A ISTIO_OUTPUT -d 169.254.7.127 -p tcp -m tcp -j ACCEPT
    -A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006
    -A ISTIO_OUTPUT ! -o lo -p udp -m mark ! --mark 0x539/0xfff -m udp --dport 53 -j REDIRECT --to-port 15053
    -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp --dport 53 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15053
    -A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT
    -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
    -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001
    COMMIT
    * raw
    -N ISTIO_OUTPUT
    -N ISTIO_PRERT
    -A PREROUTING -j ISTIO_PRERT
    -A OUTPUT -j ISTIO_OUTPUT
    -A ISTIO_OUTPUT -p udp -m mark --mark 0x539/0xfff -m udp --dport 53 -j CT --zone 1
    -A ISTIO_PRERT -p udp -m mark ! --mark 0x539/0xfff -m udp --sport 53 -j CT --zone 1
    COMMIT

    """

    static func render(_ configure: (inout InPodRules.Configuration) -> Void = { _ in }, family: InPodRules.Family = .ipv4) -> String {
        var configuration = InPodRules.Configuration()
        configure(&configuration)
        return IptablesRenderer.restorePayload(InPodRules.ruleSet(configuration, family: family))
    }

    static func lines(_ text: String) -> [String] { text.split(separator: "\n").map(String.init) }

    @Test("default: byte for byte Istio's default.golden")
    func defaultGolden() {
        #expect(Self.render() == Self.defaultGolden)
    }

    @Test("IPv6: the same payload with ::1/128 and the v6 probe address (default_ipv6.golden)")
    func ipv6() {
        let expected = Self.defaultGolden
            .replacingOccurrences(of: "127.0.0.1/32", with: "::1/128")
            .replacingOccurrences(of: "169.254.7.127", with: "fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
        #expect(Self.render(family: .ipv6) == expected)
    }

    @Test("DNS capture off: no raw table and no 15053 rules")
    func dnsOff() {
        let rendered = Self.render { $0.captureDNS = false }
        let expected = Self.lines(Self.defaultGolden).prefix { $0 != "* raw" }.filter { !$0.contains("15053") }
        #expect(Self.lines(rendered) == Array(expected))
    }

    @Test("ingress (bypass inbound capture): no probe ACCEPT in PRERT and no REDIRECT to 15006; connmark stays")
    func ingress() {
        let rendered = Self.lines(Self.render { $0.bypassInboundCapture = true })
        let expected = Self.lines(Self.defaultGolden).filter {
            $0 != "-A ISTIO_PRERT -s 169.254.7.127 -p tcp -m tcp -j ACCEPT" && !$0.contains("--to-ports 15006")
        }
        #expect(rendered == expected)
        #expect(rendered.contains("-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"))
    }

    @Test("reroute virtual interfaces: per interface REDIRECT 15001 then RETURN, first in nat PRERT")
    func virtualInterfaces() {
        let rendered = Self.lines(Self.render { $0.rerouteVirtualInterfaces = ["tap0", "tap1"] })
        let nat = Array(rendered.drop { $0 != "* nat" })
        #expect(Array(nat[5...8]) == [
            "-A ISTIO_PRERT -i tap0 -p tcp -j REDIRECT --to-ports 15001",
            "-A ISTIO_PRERT -i tap0 -p tcp -j RETURN",
            "-A ISTIO_PRERT -i tap1 -p tcp -j REDIRECT --to-ports 15001",
            "-A ISTIO_PRERT -i tap1 -p tcp -j RETURN",
        ])
        #expect(rendered.count == Self.lines(Self.defaultGolden).count + 4)
    }

    @Test("host probe SNAT rule: hostprobe.golden, and its IPv6 twin")
    func hostProbe() {
        #expect(IptablesRenderer.restorePayload(HostProbeRules.ruleSet(family: .ipv4)) == """
        * nat
        -N ISTIO_POSTRT
        -I POSTROUTING 1 -j ISTIO_POSTRT
        -A ISTIO_POSTRT -m owner --socket-exists -p tcp -m set --match-set istio-inpod-probes-v4 dst -j SNAT --to-source 169.254.7.127
        COMMIT

        """)
        let v6 = IptablesRenderer.restorePayload(HostProbeRules.ruleSet(family: .ipv6))
        #expect(v6.contains("--match-set istio-inpod-probes-v6 dst -j SNAT --to-source fd16:9254:7127:1337:ffff:ffff:ffff:ffff"))
    }

    @Test("the real iptables-restore and ip6tables-restore accept the payloads in a fresh network namespace",
          .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"))
    func appliesInNamespace() async throws {
        let name = "hbone-rules-\(getpid())"
        #expect(try await ExternalTool.run(["ip", "netns", "add", name]).status == 0)
        defer { _ = try? ExternalTool.runBlocking(["ip", "netns", "del", name]) }
        for (family, restore, save) in [(InPodRules.Family.ipv4, "iptables-restore", "iptables-save"), (.ipv6, "ip6tables-restore", "ip6tables-save")] {
            let ruleSet = InPodRules.ruleSet(InPodRules.Configuration(), family: family)
            let applied = try await ExternalTool.run(["ip", "netns", "exec", name, restore, "--noflush"], input: IptablesRenderer.restorePayload(ruleSet))
            #expect(applied.status == 0, "\(restore): \(applied.combined)")
            let saved = Set(Self.lines(try await ExternalTool.run(["ip", "netns", "exec", name, save]).standardOutput))
            // Every rule reads back in the form `savedForm` predicts (what reconciliation compares).
            let rules = ruleSet.tables.flatMap(\.rules)
            #expect(rules.count == 18, "4 mangle + 10 nat + 4 raw")
            for rule in rules {
                #expect(saved.contains(IptablesRenderer.savedForm(rule)), "\(family): \(IptablesRenderer.savedForm(rule)) missing")
            }
        }
    }
}

@Suite("iptables-save parsing")
struct IptablesSnapshotTests {
    @Test("parses tables, chains with policies and rules; canonical text drops counters and comments")
    func parse() throws {
        let text = """
        # Generated by iptables-save v1.8.9 (nf_tables) on Thu Nov 26 10:19:14 2026
        *nat
        :PREROUTING ACCEPT [12:720]
        :OUTPUT ACCEPT [0:0]
        :ISTIO_OUTPUT - [0:0]
        -A OUTPUT -j ISTIO_OUTPUT
        -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports 15001
        COMMIT
        # Completed on Thu Nov 26 10:19:14 2026

        """
        let snapshot = IptablesSnapshot(parsing: text)
        #expect(snapshot.tables.map(\.name) == ["nat"])
        let nat = try #require(snapshot[table: "nat"])
        #expect(nat.chains.map(\.name) == ["PREROUTING", "OUTPUT", "ISTIO_OUTPUT"])
        #expect(nat.chains.map(\.policy) == ["ACCEPT", "ACCEPT", "-"])
        #expect(nat.rules(in: "OUTPUT") == ["-A OUTPUT -j ISTIO_OUTPUT"])
        #expect(snapshot.canonicalText == "*nat\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n:ISTIO_OUTPUT -\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n")
    }

    @Test("fuzz: random and mutated iptables-save text never crashes the parser", arguments: [UInt64(31), 32])
    func fuzz(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let valid = Array(IptablesRenderer.restorePayload(InPodRules.ruleSet(.init(), family: .ipv4)).utf8)
        var tables = 0
        for iteration in 0..<2000 {
            let input = iteration % 2 == 0 ? random.mutate(valid) : random.bytes(Int.random(in: 0...200, using: &random))
            let snapshot = IptablesSnapshot(parsing: String(decoding: input, as: UTF8.self))
            tables += snapshot.tables.count
            // Canonical text is stable: parsing it again gives the same snapshot.
            #expect(IptablesSnapshot(parsing: snapshot.canonicalText).canonicalText == snapshot.canonicalText)
        }
        #expect(tables > 0, "mutations of a valid payload still parse to tables")
    }
}
