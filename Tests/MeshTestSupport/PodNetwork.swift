import Foundation

/// A pod and its node as two real network namespaces joined by a veth pair:
///
///     node netns  veth0 10.200.0.1/24  fd00:200::1/64
///        |
///     pod netns   eth0  10.200.0.2/24  fd00:200::2/64   default via the node
///
/// Every instance has its own pair, so the same addresses never clash. Removed on deinit.
public final class PodNetwork: Sendable {
    /// The pod namespace's name (`ip netns`).
    public let pod: String
    /// The node namespace's name.
    public let node: String
    /// The pod's IPv4 address.
    public let podIP = "10.200.0.2"
    /// The node's IPv4 address on the link.
    public let nodeIP = "10.200.0.1"
    /// The pod's IPv6 address.
    public let podIPv6 = "fd00:200::2"
    /// The node's IPv6 address on the link.
    public let nodeIPv6 = "fd00:200::1"

    /// The pod namespace's path (`/var/run/netns/<name>`), what a CNI runtime passes as `CNI_NETNS`.
    public var podPath: String { "/var/run/netns/\(self.pod)" }
    /// The node namespace's path.
    public var nodePath: String { "/var/run/netns/\(self.node)" }

    /// Creates both namespaces and the link. Needs root (``Capability/canCreateNetworkNamespaces``).
    public init(tag: String = "t") async throws {
        let suffix = "\(tag)-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        self.pod = "hbp-\(suffix)"
        self.node = "hbn-\(suffix)"
        let setup: [[String]] = [
            ["ip", "netns", "add", self.pod],
            ["ip", "netns", "add", self.node],
            ["ip", "netns", "exec", self.pod, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"],
            ["ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"],
            ["ip", "-n", self.node, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", self.pod],
            ["ip", "-n", self.node, "link", "set", "lo", "up"],
            ["ip", "-n", self.node, "link", "set", "veth0", "up"],
            ["ip", "-n", self.node, "addr", "add", "\(self.nodeIP)/24", "dev", "veth0"],
            ["ip", "-n", self.node, "-6", "addr", "add", "\(self.nodeIPv6)/64", "dev", "veth0", "nodad"],
            ["ip", "-n", self.pod, "link", "set", "lo", "up"],
            ["ip", "-n", self.pod, "link", "set", "eth0", "up"],
            ["ip", "-n", self.pod, "addr", "add", "\(self.podIP)/24", "dev", "eth0"],
            ["ip", "-n", self.pod, "-6", "addr", "add", "\(self.podIPv6)/64", "dev", "eth0", "nodad"],
            ["ip", "-n", self.pod, "route", "add", "default", "via", self.nodeIP],
            ["ip", "-n", self.pod, "-6", "route", "add", "default", "via", self.nodeIPv6],
        ]
        do {
            for command in setup {
                let result = try await ExternalTool.run(command)
                guard result.status == 0 else {
                    throw PodNetworkError(command: command.joined(separator: " "), output: result.combined)
                }
            }
            try await self.waitForLinkLocal()
        } catch {
            Self.delete([self.pod, self.node])
            throw error
        }
    }

    /// Waits until both ends have their IPv6 link-local address: the kernel adds it (and its
    /// local route) when the veth carrier comes up, asynchronously, and a test comparing
    /// routing tables must not see it appear halfway.
    private func waitForLinkLocal() async throws {
        for _ in 0..<100 {
            let pod = try await ExternalTool.run(["ip", "-n", self.pod, "-6", "addr", "show", "dev", "eth0", "scope", "link"]).standardOutput
            let node = try await ExternalTool.run(["ip", "-n", self.node, "-6", "addr", "show", "dev", "veth0", "scope", "link"]).standardOutput
            if pod.contains("fe80"), node.contains("fe80"), !pod.contains("tentative"), !node.contains("tentative") { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw PodNetworkError(command: "waiting for IPv6 link-local addresses", output: "not configured after 5 s")
    }

    deinit {
        Self.delete([self.pod, self.node])
    }

    /// Runs a command inside the pod namespace (`ip netns exec`).
    @discardableResult
    public func inPod(_ arguments: [String], input: String? = nil) async throws -> ToolResult {
        try await ExternalTool.run(["ip", "netns", "exec", self.pod] + arguments, input: input)
    }

    /// Runs a command inside the node namespace.
    @discardableResult
    public func inNode(_ arguments: [String], input: String? = nil) async throws -> ToolResult {
        try await ExternalTool.run(["ip", "netns", "exec", self.node] + arguments, input: input)
    }

    /// What `iptables-save`, `ip6tables-save`, `ip rule`, `ip -6 rule` and the routes of
    /// every table print in the pod, without `iptables-save`'s dated comment lines: the
    /// state a remove must restore byte for byte (chain packet counters left out).
    /// With `legacy`, the x_tables rules are read (`iptables-legacy-save`).
    public func podKernelState(legacy: Bool = false) async throws -> String {
        var text = ""
        let suffix = legacy ? "-legacy-save" : "-save"
        for command in [["iptables" + suffix], ["ip6tables" + suffix], ["ip", "rule"], ["ip", "-6", "rule"],
                        ["ip", "-4", "route", "show", "table", "all"], ["ip", "-6", "route", "show", "table", "all"]] {
            let result = try await self.inPod(command)
            let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false)
                .filter { !$0.hasPrefix("#") }
                .map { line in
                    // Chain counters (`:PREROUTING ACCEPT [12:720]`) count packets, not configuration;
                    // legacy iptables reports them live.
                    line.hasPrefix(":") ? String(line).replacing(#/\s\[\d+:\d+\]$/#, with: "") : String(line)
                }
            text += "$ \(command.joined(separator: " "))\n" + lines.joined(separator: "\n")
        }
        return text
    }

    private static func delete(_ names: [String]) {
        for name in names { _ = try? ExternalTool.runBlocking(["ip", "netns", "del", name]) }
    }
}

/// A setup command of ``PodNetwork`` failed.
public struct PodNetworkError: Error, CustomStringConvertible {
    /// The command.
    public let command: String
    /// Its output.
    public let output: String
    public var description: String { "\(self.command) failed: \(self.output)" }
}
