/// The parsers that meet bytes from outside the process, as coverage-guided fuzz targets.
///
/// Each target takes arbitrary bytes and either returns (the input was handled: parsed,
/// refused with an error, or passed on) or throws ``FuzzFailure`` when a property that must
/// hold for every input does not. A trap (a failed precondition, an out-of-bounds index,
/// with AddressSanitizer an invalid memory access) is a finding too. The same targets run
/// three ways:
///
/// - under libFuzzer, built with `-sanitize=fuzzer,address` (`scripts/fuzz`), where a
///   thrown failure becomes a crash and the input is kept as an artifact;
/// - as `mesh-fuzz TARGET FILE|DIR…`, replaying inputs in an ordinary build;
/// - in `MeshFuzzingTests`, which replays the committed corpus
///   (`Tests/Fuzz/Corpus/<target>/`) on every test run, so every input that ever found a
///   bug stays a regression test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// HTTP/2 bytes from an authenticated HBONE peer, into ``InboundDataSplicer`` (the
    /// first parser they meet, before nio-http2's) and ``ErrorGoAwayWatch``.
    case http2Inbound = "http2-inbound"
    /// A whole HBONE server connection above TLS: splicer, nio-http2, keepalive.
    case http2Connection = "http2-connection"
    /// The values of an HBONE `CONNECT`: `:authority`, `forwarded`, `baggage`,
    /// `traceparent`, and the IP addresses and prefixes they and the local config carry.
    case connectHeaders = "connect-headers"
    /// ZDS messages from the node agent or the node proxy (protobuf on a Unix socket).
    case zds
    /// Istio CA messages: gRPC length-prefixed framing and the protobuf inside.
    case istioCA = "istio-ca"
    /// Netlink attributes as the kernel's replies carry them (parsed with libmnl).
    case netlink
    /// A CNI invocation: the network configuration on stdin and `CNI_*` variables.
    case cni
    /// SPIFFE IDs and trust domains, as they come in certificates' URI SANs and policies.
    case spiffe
    /// Certificate signing requests, PEM or DER, as a workload sends them to the CA.
    case csr
    /// `iptables-save` output, read back to check what is installed in a pod.
    case iptablesSave = "iptables-save"
    /// ztunnel's local configuration (YAML), and the store and decisions built from it.
    case localConfig = "local-config"
    /// Kubernetes manifests through the migration analysis (`ambient-migrate`).
    case manifests
    /// The node agent's HTTP answer to the CNI plugin, as the plugin reads it.
    case pluginEvent = "plugin-event"
    /// A TLS server's first bytes, where our client's cipher suite guard reads the
    /// ServerHello's suite.
    case serverHello = "server-hello"

    /// Runs the target on `input`; returns whether the input was accepted (parsed, or
    /// for the HTTP/2 and CNI targets, handled without an error), which the committed
    /// corpus must reach for every target.
    @discardableResult
    public func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        switch self {
        case .http2Inbound: return try HTTP2InboundTarget.run(input)
        case .http2Connection: return try HTTP2ConnectionTarget.run(input)
        case .connectHeaders: return try ConnectHeadersTarget.run(input)
        case .zds: return try ZDSTarget.run(input)
        case .istioCA: return try IstioCATarget.run(input)
        case .netlink: return try NetlinkTarget.run(input)
        case .cni: return try CNITarget.run(input)
        case .spiffe: return try SPIFFETarget.run(input)
        case .csr: return try CSRTarget.run(input)
        case .iptablesSave: return try IptablesSaveTarget.run(input)
        case .localConfig: return try LocalConfigTarget.run(input)
        case .manifests: return try ManifestsTarget.run(input)
        case .pluginEvent: return try PluginEventTarget.run(input)
        case .serverHello: return try ServerHelloTarget.run(input)
        }
    }
}

/// A property that must hold for every input did not.
public struct FuzzFailure: Error, CustomStringConvertible {
    /// What went wrong, with the values involved.
    public var description: String

    init(_ description: String) { self.description = description }
}

/// Throws a ``FuzzFailure`` saying `message` unless `condition` holds.
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(FuzzFailure) {
    if !condition { throw FuzzFailure(message()) }
}

/// Reads fuzz input from the front: a few control bytes, then the rest as the payload.
struct FuzzInput {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    /// The next byte, or 0 once the input is used up.
    mutating func byte() -> UInt8 { self.bytes.popFirst() ?? 0 }

    /// What is left.
    var rest: [UInt8] { Array(self.bytes) }

    /// What is left, as text (invalid UTF-8 repaired, as a header or file read would be).
    var restAsText: String { String(decoding: self.bytes, as: UTF8.self) }
}
