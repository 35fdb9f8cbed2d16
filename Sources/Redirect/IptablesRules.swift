/// A typed iptables rule set: tables, the chains we create in them and the rules we
/// append, in order. Only ``IptablesRenderer`` knows iptables syntax; everything that
/// decides *which* rules exist (``InPodRules``) builds these values.
public struct IptablesRuleSet: Hashable, Sendable {
    /// The tables, in the order they are written (`iptables-restore` takes them in any order;
    /// Istio writes them sorted: mangle, nat, raw).
    public var tables: [Table]

    /// One table's part of the set.
    public struct Table: Hashable, Sendable {
        /// `mangle`, `nat`, `raw`, `filter`.
        public var name: String
        /// Chains created with `-N`, in order.
        public var newChains: [String]
        /// Rules, in order.
        public var rules: [IptablesRule]

        /// A table with the given chains and rules.
        public init(name: String, newChains: [String] = [], rules: [IptablesRule] = []) {
            self.name = name
            self.newChains = newChains
            self.rules = rules
        }
    }

    /// A rule set of `tables`.
    public init(tables: [Table]) {
        self.tables = tables
    }
}

/// One rule: appended to (or inserted at a position in) a chain, with matches and a target.
public struct IptablesRule: Hashable, Sendable {
    /// The chain the rule goes into.
    public var chain: String
    /// `nil` appends (`-A`); a position inserts (`-I chain N`).
    public var insertAt: Int?
    /// Match options, rendered in this order (iptables evaluates them left to right).
    public var matches: [Match]
    /// What happens to a matching packet.
    public var target: Target

    /// A rule appended to `chain` unless `insertAt` is given.
    public init(_ chain: String, insertAt: Int? = nil, _ matches: [Match] = [], _ target: Target) {
        self.chain = chain
        self.insertAt = insertAt
        self.matches = matches
        self.target = target
    }

    /// Transport protocols the rules match on.
    public enum TransportProtocol: String, Hashable, Sendable {
        case tcp
        case udp
    }

    /// A firewall mark or connection mark with its mask.
    public struct Mark: Hashable, Sendable, CustomStringConvertible {
        /// The value.
        public var value: UInt32
        /// The bits that are compared or set.
        public var mask: UInt32

        /// `value/mask`.
        public init(_ value: UInt32, mask: UInt32) {
            self.value = value
            self.mask = mask
        }

        /// `0x539/0xfff`, the form iptables prints.
        public var description: String { "0x\(String(self.value, radix: 16))/0x\(String(self.mask, radix: 16))" }
    }

    /// One match option. `negated` puts iptables' `!` before the option.
    public enum Match: Hashable, Sendable {
        /// `-s address[/prefix]`.
        case source(String, negated: Bool = false)
        /// `-d address[/prefix]`.
        case destination(String, negated: Bool = false)
        /// `-i interface`.
        case inInterface(String, negated: Bool = false)
        /// `-o interface`.
        case outInterface(String, negated: Bool = false)
        /// `-p tcp|udp`.
        case transport(TransportProtocol)
        /// `-m tcp|udp`: loads the protocol's match module (needed before port options in
        /// some positions; kept explicit so the text is exactly Istio's).
        case transportModule(TransportProtocol)
        /// `--dport port`.
        case destinationPort(UInt16, negated: Bool = false)
        /// `--sport port`.
        case sourcePort(UInt16, negated: Bool = false)
        /// `-m mark --mark value/mask`.
        case mark(Mark, negated: Bool = false)
        /// `-m connmark --mark value/mask`.
        case connectionMark(Mark)
        /// `-m owner --socket-exists`: the packet comes from a local socket (the host's kubelet).
        case localSocket
        /// `-m set --match-set name dst`.
        case destinationInSet(String)
    }

    /// What a matching packet gets.
    public enum Target: Hashable, Sendable {
        /// `-j CHAIN`.
        case jump(String)
        /// `-j ACCEPT`.
        case accept
        /// `-j RETURN`.
        case `return`
        /// `-j REDIRECT --to-ports port` (`--to-port` when `singular`; Istio writes both).
        case redirect(toPort: UInt16, singular: Bool = false)
        /// `-j CONNMARK --set-xmark value/mask`.
        case setConnectionMark(Mark)
        /// `-j CONNMARK --restore-mark --nfmask … --ctmask …`.
        case restoreConnectionMark(packetMask: UInt32, connectionMask: UInt32)
        /// `-j CT --zone N`.
        case conntrackZone(UInt16)
        /// `-j SNAT --to-source address`.
        case sourceNAT(String)
    }
}
