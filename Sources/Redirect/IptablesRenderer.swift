/// Renders an ``IptablesRuleSet`` as an `iptables-restore --noflush` payload: per table a
/// `*table` line, `-N` for each new chain, the rules, `COMMIT`. The only place in the
/// package that knows iptables' option syntax.
public enum IptablesRenderer {
    /// The `iptables-restore` / `ip6tables-restore` input for `ruleSet`.
    public static func restorePayload(_ ruleSet: IptablesRuleSet) -> String {
        var lines: [String] = []
        for table in ruleSet.tables {
            lines.append("* \(table.name)")
            lines += table.newChains.map { "-N \($0)" }
            lines += table.rules.map(Self.render)
            lines.append("COMMIT")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One rule as its `-A`/`-I` line.
    public static func render(_ rule: IptablesRule) -> String {
        var words = rule.insertAt.map { ["-I", rule.chain, "\($0)"] } ?? ["-A", rule.chain]
        for match in rule.matches { words += Self.words(match) }
        words += Self.words(rule.target)
        return words.joined(separator: " ")
    }

    /// The rule as `iptables-save` prints it back: host addresses get their `/32` or `/128`,
    /// a port option gets its implicit `-m tcp`/`-m udp`, `--to-port` becomes `--to-ports`.
    /// Reconciliation compares installed rules in this form.
    public static func savedForm(_ rule: IptablesRule) -> String {
        var matches: [IptablesRule.Match] = []
        var transport: IptablesRule.TransportProtocol?
        var moduleLoaded = false
        for match in rule.matches {
            switch match {
            case .source(let address, let negated):
                matches.append(.source(Self.withPrefix(address), negated: negated))
            case .destination(let address, let negated):
                matches.append(.destination(Self.withPrefix(address), negated: negated))
            case .transport(let proto):
                transport = proto
                matches.append(match)
            case .transportModule:
                moduleLoaded = true
                matches.append(match)
            case .destinationPort, .sourcePort:
                if !moduleLoaded, let transport {
                    matches.append(.transportModule(transport))
                    moduleLoaded = true
                }
                matches.append(match)
            default:
                matches.append(match)
            }
        }
        var target = rule.target
        if case .redirect(let port, _) = target { target = .redirect(toPort: port, singular: false) }
        return Self.render(IptablesRule(rule.chain, insertAt: rule.insertAt, matches, target))
    }

    private static func withPrefix(_ address: String) -> String {
        address.contains("/") ? address : address + (address.contains(":") ? "/128" : "/32")
    }

    private static func negation(_ negated: Bool) -> [String] { negated ? ["!"] : [] }

    private static func words(_ match: IptablesRule.Match) -> [String] {
        switch match {
        case .source(let address, let negated): negation(negated) + ["-s", address]
        case .destination(let address, let negated): negation(negated) + ["-d", address]
        case .inInterface(let name, let negated): negation(negated) + ["-i", name]
        case .outInterface(let name, let negated): negation(negated) + ["-o", name]
        case .transport(let proto): ["-p", proto.rawValue]
        case .transportModule(let proto): ["-m", proto.rawValue]
        case .destinationPort(let port, let negated): negation(negated) + ["--dport", "\(port)"]
        case .sourcePort(let port, let negated): negation(negated) + ["--sport", "\(port)"]
        case .mark(let mark, let negated): ["-m", "mark"] + negation(negated) + ["--mark", "\(mark)"]
        case .connectionMark(let mark): ["-m", "connmark", "--mark", "\(mark)"]
        case .localSocket: ["-m", "owner", "--socket-exists"]
        case .destinationInSet(let name): ["-m", "set", "--match-set", name, "dst"]
        }
    }

    private static func words(_ target: IptablesRule.Target) -> [String] {
        switch target {
        case .jump(let chain): ["-j", chain]
        case .accept: ["-j", "ACCEPT"]
        case .return: ["-j", "RETURN"]
        case .redirect(let port, let singular): ["-j", "REDIRECT", singular ? "--to-port" : "--to-ports", "\(port)"]
        case .setConnectionMark(let mark): ["-j", "CONNMARK", "--set-xmark", "\(mark)"]
        case .restoreConnectionMark(let packetMask, let connectionMask):
            ["-j", "CONNMARK", "--restore-mark", "--nfmask", Self.hex(packetMask), "--ctmask", Self.hex(connectionMask)]
        case .conntrackZone(let zone): ["-j", "CT", "--zone", "\(zone)"]
        case .sourceNAT(let address): ["-j", "SNAT", "--to-source", address]
        }
    }

    private static func hex(_ value: UInt32) -> String { "0x\(String(value, radix: 16))" }
}
