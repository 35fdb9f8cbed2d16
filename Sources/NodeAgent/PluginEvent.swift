import Foundation

/// The body of istio-cni's `POST /cmdadd` (`cni/pkg/plugin/cnieventclient.go`): Go's
/// default field names, IPs copied from `prevResult.ips`, `Mask` as base64 of the mask bytes.
///
/// ```json
/// {"Netns":"/var/run/netns/cni-1234","PodName":"web-0","PodNamespace":"default",
///  "IPs":[{"Interface":0,"Address":{"IP":"10.0.0.2","Mask":"////AA=="},"Gateway":"10.0.0.1"}]}
/// ```
public struct CNIPluginEvent: Hashable, Sendable, Codable {
    public struct IPConfig: Hashable, Sendable, Codable {
        public struct Address: Hashable, Sendable, Codable {
            public var IP: String
            public var Mask: String
        }

        public var Interface: Int?
        public var Address: Address
        public var Gateway: String?
    }

    public var Netns: String
    public var PodName: String
    public var PodNamespace: String
    public var IPs: [IPConfig]

    public init(netns: String, podName: String, podNamespace: String, ips: [IPConfig]) {
        self.Netns = netns
        self.PodName = podName
        self.PodNamespace = podNamespace
        self.IPs = ips
    }

    /// An IP entry from a CNI `ips` address in CIDR notation (`10.0.0.2/24`).
    public static func ipConfig(cidr: String, gateway: String?, interface: Int?) -> IPConfig? {
        let parts = cidr.split(separator: "/")
        guard parts.count == 2, let prefix = Int(parts[1]) else { return nil }
        let bits = parts[0].contains(":") ? 128 : 32
        guard (0...bits).contains(prefix) else { return nil }
        var mask = [UInt8](repeating: 0, count: bits / 8)
        for bit in 0..<prefix { mask[bit / 8] |= 0x80 >> UInt8(bit % 8) }
        return IPConfig(Interface: interface, Address: .init(IP: String(parts[0]), Mask: Data(mask).base64EncodedString()), Gateway: gateway)
    }
}

/// The Unix socket the agent serves its plugin API on: `<cni_agent_run_dir>/pluginevent.sock`.
public enum PluginEventSocket {
    /// `pluginevent.sock`.
    public static let fileName = "pluginevent.sock"

    /// The socket path in `runDirectory`.
    public static func path(in runDirectory: String) -> String {
        runDirectory.hasSuffix("/") ? runDirectory + Self.fileName : runDirectory + "/" + Self.fileName
    }
}
