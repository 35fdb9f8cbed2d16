import Foundation
import MeshTestSupport
import Netlink
import Redirect
import Testing

/// The redirection lifecycle against the real kernel: apply, verify, re-apply, inspect,
/// remove, in a fresh pod namespace, with every failure path checked for leftovers.
@Suite("In-pod redirection lifecycle (real netns, iptables, rtnetlink)", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` to create network namespaces (CI has both)"))
struct InPodRedirectionTests {
    static func redirection(
        backend: IptablesBackend.Kind? = nil, _ configure: (inout InPodRedirection.Configuration) -> Void = { _ in }
    ) throws -> InPodRedirection {
        var configuration = InPodRedirection.Configuration(backend: try IptablesBackend.detect(forced: backend))
        configure(&configuration)
        return InPodRedirection(configuration: configuration)
    }

    /// The backends to run the lifecycle with: the host's, and legacy too when its binaries exist.
    static var backends: [IptablesBackend.Kind] {
        var kinds: [IptablesBackend.Kind] = [.nft]
        if ExternalTool.isAvailable("iptables-legacy-restore") || FileManager.default.fileExists(atPath: "/usr/sbin/iptables-legacy-restore") {
            kinds.append(.legacy)
        }
        return kinds
    }

    /// `state` without tables that hold only built-in chains and no rules: x_tables (legacy)
    /// tables, once used in a namespace, cannot be deleted.
    static func withoutEmptyTables(_ state: String) -> String {
        var output: [String] = []
        var block: [String] = []
        for line in state.components(separatedBy: "\n") {
            if line.hasPrefix("*") { block = [line]; continue }
            if !block.isEmpty {
                block.append(line)
                if line == "COMMIT" {
                    let empty = block.dropFirst().dropLast().allSatisfy { $0.hasPrefix(":") && !$0.contains(" - [") }
                    if !empty { output += block }
                    block = []
                }
                continue
            }
            output.append(line)
        }
        return output.joined(separator: "\n")
    }

    @Test("apply installs rules and routing; twice equals once; remove restores iptables-save, ip rule and routes byte for byte",
          arguments: Self.backends)
    func lifecycle(backend: IptablesBackend.Kind) async throws {
        let network = try await PodNetwork(tag: "life")
        let namespace = try NetworkNamespace(path: network.podPath)
        let before = try await network.podKernelState(legacy: backend == .legacy)
        let redirection = try Self.redirection(backend: backend)

        #expect(try await redirection.apply(in: namespace) == .installed)
        #expect(try await redirection.verify(in: namespace) == [])
        let installed = try await network.podKernelState(legacy: backend == .legacy)
        #expect(installed != before)
        #expect(installed.contains("32764:\tfrom all fwmark 0x111/0xfff lookup 100"), "ip rule shows the fwmark rule:\n\(installed)")
        let localRoutes = installed.components(separatedBy: "\n").filter { $0.hasPrefix("local default dev lo table 100 ") }
        #expect(localRoutes.count == 2, "the local route of table 100 and its IPv6 twin:\n\(installed)")
        #expect(installed.contains("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"))
        #expect(installed.contains("-A ISTIO_OUTPUT ! -d ::1/128 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"))

        #expect(try await redirection.apply(in: namespace) == .unchanged)
        let reapplied = try await network.podKernelState(legacy: backend == .legacy)
        #expect(reapplied == installed, "a second apply changes nothing")

        #expect(try await InPodRedirection.inspect(in: namespace, backend: redirection.configuration.backend) == .installed(.init()))

        try await redirection.remove(in: namespace)
        if backend == .nft {
            let after = try await network.podKernelState()
            #expect(after == before)
        } else {
            // Legacy: byte for byte except the x_tables tables, which stay loaded but empty.
            #expect(Self.withoutEmptyTables(try await network.podKernelState(legacy: backend == .legacy)) == Self.withoutEmptyTables(before))
        }
        #expect(try await InPodRedirection.inspect(in: namespace, backend: redirection.configuration.backend) == .absent)
        try await redirection.remove(in: namespace)
        #expect(try await redirection.verify(in: namespace) != [], "nothing is installed after remove")
    }

    @Test("concurrent applies and removes on one namespace (two handles on it) are serialized: exactly one install, nothing half-done")
    func concurrentOperations() async throws {
        let network = try await PodNetwork(tag: "conc")
        let redirection = try Self.redirection()
        let before = try await network.podKernelState()
        try await redirection.apply(in: NetworkNamespace(path: network.podPath))
        let installed = try await network.podKernelState()
        try await redirection.remove(in: NetworkNamespace(path: network.podPath))
        for round in 0..<5 {
            // Separate handles, as separate callers would open them: the exclusion is per
            // namespace (device, inode), not per handle.
            let outcomes = try await withThrowingTaskGroup(of: InPodRedirection.ApplyOutcome.self) { group in
                for _ in 0..<4 {
                    let namespace = try NetworkNamespace(path: network.podPath)
                    group.addTask { try await redirection.apply(in: namespace) }
                }
                return try await group.reduce(into: [InPodRedirection.ApplyOutcome]()) { $0.append($1) }
            }
            #expect(outcomes.sorted { "\($0)" < "\($1)" } == [.installed, .unchanged, .unchanged, .unchanged], "round \(round)")
            #expect(try await network.podKernelState() == installed, "round \(round): installed exactly once")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 {
                    let namespace = try NetworkNamespace(path: network.podPath)
                    group.addTask { try await redirection.remove(in: namespace) }
                }
                try await group.waitForAll()
            }
            #expect(try await network.podKernelState() == before, "round \(round): removed completely")
        }
    }

    @Test("verify reports drift; apply repairs a damaged install; inspect re-derives each variant after a restart")
    func driftAndRecovery() async throws {
        let network = try await PodNetwork(tag: "drift")
        let namespace = try NetworkNamespace(path: network.podPath)
        let before = try await network.podKernelState()
        let redirection = try Self.redirection()
        try await redirection.apply(in: namespace)
        let clean = try await network.podKernelState()

        // Someone deletes one rule and the ip rule.
        #expect(try await network.inPod(["iptables", "-t", "nat", "-D", "ISTIO_OUTPUT", "-p", "tcp", "-m", "mark", "--mark", "0x111/0xfff", "-j", "ACCEPT"]).status == 0)
        #expect(try await network.inPod(["ip", "rule", "del", "pref", "32764"]).status == 0)
        let problems = try await redirection.verify(in: namespace)
        #expect(problems.contains { $0.contains("ISTIO_OUTPUT") }, "\(problems)")
        #expect(problems.contains { $0.contains("0 copies of rule fwmark 0x111/0xfff") }, "\(problems)")
        guard case .damaged = try await InPodRedirection.inspect(in: namespace, backend: redirection.configuration.backend) else {
            Issue.record("a damaged install is reported as damaged")
            return
        }
        #expect(try await redirection.apply(in: namespace) == .replaced)
        #expect(try await redirection.verify(in: namespace) == [])
        #expect(try await network.podKernelState() == clean)

        // A restarted agent finds each variant as it was installed.
        var variant = InPodRules.Configuration()
        variant.captureDNS = false
        variant.bypassInboundCapture = true
        variant.rerouteVirtualInterfaces = ["tap0", "tap1"]
        let other = try Self.redirection { $0.rules = variant }
        #expect(try await other.apply(in: namespace) == .replaced)
        #expect(try await InPodRedirection.inspect(in: namespace, backend: other.configuration.backend) == .installed(variant))
        #expect(try await redirection.verify(in: namespace) != [], "the default configuration sees the variant as drift")
        try await other.remove(in: namespace)
        #expect(try await network.podKernelState() == before)
    }

    @Test("legacy backend: in-pod runs stay off the host-global /run/xtables.lock (pod-scoped XTABLES_LOCKFILE)",
          .enabled(if: FileManager.default.fileExists(atPath: "/usr/sbin/iptables-legacy-restore"), "needs iptables-legacy"))
    func legacyLockAvoided() async throws {
        let network = try await PodNetwork(tag: "lock")
        let namespace = try NetworkNamespace(path: network.podPath)
        let lock = open("/run/xtables.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        #expect(lock >= 0)
        defer { close(lock) }
        #expect(flock(lock, LOCK_EX) == 0, "the test holds the host lock, as a busy kube-proxy would")
        defer { flock(lock, LOCK_UN) }
        let redirection = try Self.redirection(backend: .legacy)
        let clock = ContinuousClock()
        let started = clock.now
        #expect(try await redirection.apply(in: namespace) == .installed)
        #expect(clock.now - started < .seconds(10), "did not wait for the host lock (legacy waits up to 30 s)")
        #expect(try await redirection.verify(in: namespace) == [])
        try await redirection.remove(in: namespace)
    }

    @Test("bad namespaces: a missing path, a deleted netns and a file that is not a netns are typed errors")
    func badNamespaces() async throws {
        #expect { try NetworkNamespace(path: "/var/run/netns/does-not-exist-\(getpid())") } throws: { error in
            (error as? RedirectError)?.kind == .namespaceNotFound
        }
        let name = "hbdel-\(getpid())"
        #expect(try await ExternalTool.run(["ip", "netns", "add", name]).status == 0)
        #expect(try await ExternalTool.run(["ip", "netns", "del", name]).status == 0)
        #expect { try NetworkNamespace(path: "/var/run/netns/\(name)") } throws: { error in
            (error as? RedirectError)?.kind == .namespaceNotFound
        }
        #expect { try NetworkNamespace(path: "/etc/hostname") } throws: { error in
            guard let error = error as? RedirectError else { return false }
            return error.kind == .notANetworkNamespace && error.description.contains("/etc/hostname")
        }
    }

    @Test("iptables missing: a typed error naming the binary, and the namespace untouched")
    func iptablesMissing() async throws {
        let network = try await PodNetwork(tag: "noipt")
        let namespace = try NetworkNamespace(path: network.podPath)
        let before = try await network.podKernelState()
        let broken = InPodRedirection(configuration: .init(backend: IptablesBackend(kind: .nft, suffix: "-not-installed")))
        await #expect { try await broken.apply(in: namespace) } throws: { error in
            guard let error = error as? RedirectError else { return false }
            return error.kind == .iptablesMissing && error.detail.contains("iptables-not-installed-save")
        }
        #expect(try await network.podKernelState() == before)
    }

    @Test("a rule that fails to load: typed error with iptables' message, nothing half-installed (IPv4 and IPv6)")
    func failingRule() async throws {
        let network = try await PodNetwork(tag: "fail")
        let namespace = try NetworkNamespace(path: network.podPath)
        let before = try await network.podKernelState()
        var rules = InPodRules.Configuration()
        rules.rerouteVirtualInterfaces = ["an-interface-name-far-too-long"]
        let failing = try Self.redirection { $0.rules = rules }
        await #expect { try await failing.apply(in: namespace) } throws: { error in
            guard let error = error as? RedirectError else { return false }
            return error.kind == .iptablesFailed && error.detail.contains("iptables") && error.detail.contains("exited")
        }
        #expect(try await network.podKernelState() == before, "the routes and the tables committed before the failure are gone")
    }

    @Test("an IPv6-disabled pod: IPv4 only by default, a typed error when IPv6 is required")
    func ipv6Disabled() async throws {
        let network = try await PodNetwork(tag: "nov6")
        for key in ["all", "default", "lo", "eth0"] {
            #expect(try await network.inPod(["sysctl", "-qw", "net.ipv6.conf.\(key).disable_ipv6=1"]).status == 0)
        }
        let namespace = try NetworkNamespace(path: network.podPath)
        let before = try await network.podKernelState()
        let required = try Self.redirection { $0.ipv6 = .required }
        await #expect { try await required.apply(in: namespace) } throws: { error in
            (error as? RedirectError)?.kind == .ipv6Disabled
        }
        #expect(try await network.podKernelState() == before)

        let automatic = try Self.redirection()
        #expect(try await automatic.apply(in: namespace) == .installed)
        #expect(try await automatic.verify(in: namespace) == [])
        let state = try await network.podKernelState()
        #expect(state.contains("REDIRECT --to-ports 15001"))
        #expect(!state.contains("::1/128"), "no IPv6 rules in an IPv6-disabled pod")
        try await automatic.remove(in: namespace)
        #expect(try await network.podKernelState() == before)
    }
}
