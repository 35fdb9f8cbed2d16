/// The rules istio-cni installs inside an enrolled pod's network namespace so that its
/// traffic goes through the node proxy (istio-cni `cni/pkg/iptables/iptables.go`
/// `AppendInpodRules`; its goldens `cni/pkg/iptables/testdata/*.golden` are the tests here).
///
/// - Outbound TCP that is not to loopback and not marked by the proxy → REDIRECT 15001.
/// - Inbound TCP not to loopback and not to 15008 → REDIRECT 15006 (15008 reaches the
///   proxy's in-pod HBONE listener directly).
/// - DNS (UDP 53 not via `lo`, TCP 53 not to loopback) → REDIRECT 15053; the proxy's own
///   DNS queries and their answers use conntrack zone 1.
/// - Kubelet probes arrive SNATed to the probe address (``HostProbeRules``) and are accepted
///   before any redirect.
/// - Connections the proxy makes into the pod carry mark 0x539; mangle turns that into
///   connmark 0x111 and restores it on the app's replies, which the fwmark rule of
///   ``InPodRouting`` sends back to the proxy's socket (spoofed-source delivery).
public enum InPodRules {
    /// What varies between pods and nodes.
    public struct Configuration: Hashable, Sendable {
        /// Capture DNS to the proxy's DNS server. Default `true` (`AMBIENT_DNS_CAPTURE`;
        /// per pod `ambient.istio.io/dns-capture`).
        public var captureDNS = true
        /// Leave inbound traffic alone (`ambient.istio.io/bypass-inbound-capture: "true"`,
        /// ingress gateways). Default `false`.
        public var bypassInboundCapture = false
        /// Interfaces whose inbound TCP is treated as outbound (`istio.io/reroute-virtual-interfaces`,
        /// KubeVirt). Default none.
        public var rerouteVirtualInterfaces: [String] = []
        /// Marks and ports; Istio's values by default.
        public var constants = Constants()

        /// The defaults above.
        public init() {}
    }

    /// Marks and ports shared by the rules, the routes and the proxy's sockets.
    public struct Constants: Hashable, Sendable {
        /// The mark on every socket the proxy opens in a pod (`SO_MARK`). Default 0x539/0xfff (1337).
        public var proxyMark = IptablesRule.Mark(0x539, mask: 0xfff)
        /// The connmark for connections the proxy opened into the pod. Default 0x111/0xfff.
        public var connectionMark = IptablesRule.Mark(0x111, mask: 0xfff)
        /// Outbound capture port. Default 15001.
        public var outboundPort: UInt16 = 15001
        /// Inbound plaintext capture port. Default 15006.
        public var inboundPort: UInt16 = 15006
        /// HBONE port, never redirected. Default 15008.
        public var hbonePort: UInt16 = 15008
        /// DNS capture port. Default 15053.
        public var dnsPort: UInt16 = 15053
        /// Conntrack zone for the proxy's DNS. Default 1.
        public var dnsConntrackZone: UInt16 = 1
        /// The routing table of ``InPodRouting``'s local route. Default 100.
        public var routingTable: UInt32 = 100
        /// The preference of ``InPodRouting``'s fwmark rule. Default 32764.
        public var rulePriority: UInt32 = 32764

        /// Istio's values.
        public init() {}
    }

    /// The address family a rule set is for: `iptables-restore` or `ip6tables-restore`.
    public enum Family: Hashable, Sendable {
        case ipv4
        case ipv6

        /// The loopback network as the rules write it.
        public var loopback: String { self == .ipv4 ? "127.0.0.1/32" : "::1/128" }

        /// The source address kubelet probes are SNATed to on the host.
        public var probeAddress: String { self == .ipv4 ? "169.254.7.127" : "fd16:9254:7127:1337:ffff:ffff:ffff:ffff" }
    }

    static let prerouting = "ISTIO_PRERT"
    static let output = "ISTIO_OUTPUT"

    /// The rule set for one family.
    public static func ruleSet(_ configuration: Configuration, family: Family) -> IptablesRuleSet {
        let c = configuration.constants
        let notLoopback = IptablesRule.Match.destination(family.loopback, negated: true)
        let unmarked = IptablesRule.Match.mark(c.proxyMark, negated: true)

        let mangle = IptablesRuleSet.Table(
            name: "mangle", newChains: [Self.prerouting, Self.output],
            rules: [
                IptablesRule("PREROUTING", [], .jump(Self.prerouting)),
                IptablesRule("OUTPUT", [], .jump(Self.output)),
                IptablesRule(Self.prerouting, [.mark(c.proxyMark)], .setConnectionMark(c.connectionMark)),
                IptablesRule(Self.output, [.connectionMark(c.connectionMark)],
                             .restoreConnectionMark(packetMask: 0xffff_ffff, connectionMask: 0xffff_ffff)),
            ]
        )

        var nat: [IptablesRule] = [
            IptablesRule("OUTPUT", [], .jump(Self.output)),
            IptablesRule("PREROUTING", [], .jump(Self.prerouting)),
        ]
        for interface in configuration.rerouteVirtualInterfaces {
            nat.append(IptablesRule(Self.prerouting, [.inInterface(interface), .transport(.tcp)], .redirect(toPort: c.outboundPort)))
            nat.append(IptablesRule(Self.prerouting, [.inInterface(interface), .transport(.tcp)], .return))
        }
        if !configuration.bypassInboundCapture {
            nat.append(IptablesRule(Self.prerouting, [.source(family.probeAddress), .transport(.tcp), .transportModule(.tcp)], .accept))
        }
        nat.append(IptablesRule(Self.output, [.destination(family.probeAddress), .transport(.tcp), .transportModule(.tcp)], .accept))
        if !configuration.bypassInboundCapture {
            nat.append(IptablesRule(
                Self.prerouting, [notLoopback, .transport(.tcp), .destinationPort(c.hbonePort, negated: true), unmarked],
                .redirect(toPort: c.inboundPort)
            ))
        }
        if configuration.captureDNS {
            nat.append(IptablesRule(
                Self.output, [.outInterface("lo", negated: true), .transport(.udp), unmarked, .transportModule(.udp), .destinationPort(53)],
                .redirect(toPort: c.dnsPort, singular: true)
            ))
            nat.append(IptablesRule(
                Self.output, [notLoopback, .transport(.tcp), .destinationPort(53), unmarked], .redirect(toPort: c.dnsPort)
            ))
        }
        nat.append(IptablesRule(Self.output, [.transport(.tcp), .mark(c.connectionMark)], .accept))
        nat.append(IptablesRule(Self.output, [notLoopback, .outInterface("lo")], .accept))
        nat.append(IptablesRule(Self.output, [notLoopback, .transport(.tcp), unmarked], .redirect(toPort: c.outboundPort)))

        var tables = [mangle, IptablesRuleSet.Table(name: "nat", newChains: [Self.prerouting, Self.output], rules: nat)]
        if configuration.captureDNS {
            tables.append(IptablesRuleSet.Table(
                name: "raw", newChains: [Self.output, Self.prerouting],
                rules: [
                    IptablesRule("PREROUTING", [], .jump(Self.prerouting)),
                    IptablesRule("OUTPUT", [], .jump(Self.output)),
                    IptablesRule(Self.output, [.transport(.udp), .mark(c.proxyMark), .transportModule(.udp), .destinationPort(53)],
                                 .conntrackZone(c.dnsConntrackZone)),
                    IptablesRule(Self.prerouting, [.transport(.udp), unmarked, .transportModule(.udp), .sourcePort(53)],
                                 .conntrackZone(c.dnsConntrackZone)),
                ]
            ))
        }
        return IptablesRuleSet(tables: tables)
    }
}

/// The host-side rule that SNATs kubelet's probes to enrolled pods to the probe address
/// (istio-cni `AppendHostRules`): only TCP from a local socket (`--socket-exists`) towards
/// an address in the `istio-inpod-probes-v4`/`-v6` ipset.
public enum HostProbeRules {
    /// The ipset holding enrolled pod IPs for `family`.
    public static func setName(_ family: InPodRules.Family) -> String {
        family == .ipv4 ? "istio-inpod-probes-v4" : "istio-inpod-probes-v6"
    }

    /// The host rule set for one family.
    public static func ruleSet(family: InPodRules.Family) -> IptablesRuleSet {
        IptablesRuleSet(tables: [
            IptablesRuleSet.Table(
                name: "nat", newChains: ["ISTIO_POSTRT"],
                rules: [
                    IptablesRule("POSTROUTING", insertAt: 1, [], .jump("ISTIO_POSTRT")),
                    IptablesRule(
                        "ISTIO_POSTRT", [.localSocket, .transport(.tcp), .destinationInSet(Self.setName(family))],
                        .sourceNAT(family.probeAddress)
                    ),
                ]
            ),
        ])
    }
}
