#if canImport(Glibc)
internal import Glibc
#endif

/// Which iptables implementation writes the rules: the nf_tables one (`iptables-nft`, the
/// default of current distributions) or the legacy x_tables one. Both accept the same
/// `iptables-restore` payload; a node must use the one its other rules (kube-proxy, CNI)
/// use, or the two rule sets silently run side by side.
///
/// Detection follows istio-cni (`tools/istio-iptables/pkg/dependencies/implementation_linux.go`,
/// notes §2.8), done once in the host namespace and reused for every pod:
/// legacy if `iptables-legacy-save` prints at least 3 lines (legacy rules exist), otherwise
/// nft if `iptables-nft-save --version` says `nf_tables`, otherwise whatever plain
/// `iptables` is.
public struct IptablesBackend: Hashable, Sendable, CustomStringConvertible {
    /// The implementation.
    public enum Kind: String, Hashable, Sendable {
        /// x_tables via `iptables-legacy`: needs the host-global `/run/xtables.lock`.
        case legacy
        /// nf_tables via `iptables-nft`: transactional, no lock.
        case nft
    }

    /// The implementation.
    public var kind: Kind
    /// Binary name prefix: `iptables-nft`, `iptables-legacy` or `iptables`; the IPv6 tools
    /// use the same suffixes after `ip6tables`.
    public var variant: String

    /// Creates a backend from its kind and the binary suffix (`-nft`, `-legacy` or empty).
    public init(kind: Kind, suffix: String) {
        self.kind = kind
        self.variant = suffix
    }

    /// `iptables-nft`.
    public static let nft = IptablesBackend(kind: .nft, suffix: "-nft")
    /// `iptables-legacy`.
    public static let legacy = IptablesBackend(kind: .legacy, suffix: "-legacy")

    public var description: String { "iptables\(self.variant) (\(self.kind.rawValue))" }

    /// Detects the backend of the namespace the calling thread is in (call it in the host
    /// namespace). `forced` skips detection (istio's `FORCE_IPTABLES_BINARY`).
    ///
    /// - Throws: ``RedirectError/Kind/iptablesMissing`` when no iptables is installed.
    public static func detect(forced: Kind? = nil) throws(RedirectError) -> IptablesBackend {
        if let forced {
            let backend = forced == .nft ? Self.nft : Self.legacy
            guard Subprocess.locate(backend.binary(.save, .ipv4)) != nil else {
                throw RedirectError(.iptablesMissing, "\(backend.binary(.save, .ipv4)) is not installed")
            }
            return backend
        }
        if Subprocess.locate("iptables-legacy-save") != nil,
           let output = try? Subprocess.run(["iptables-legacy-save"]), output.status == 0,
           output.standardOutput.split(separator: "\n").count >= 3 {
            return Self.legacy
        }
        if Subprocess.locate("iptables-nft-save") != nil,
           let output = try? Subprocess.run(["iptables-nft-save", "--version"]), output.status == 0,
           output.standardOutput.contains("nf_tables") {
            return Self.nft
        }
        guard Subprocess.locate("iptables-save") != nil else {
            throw RedirectError(.iptablesMissing, "none of iptables-legacy, iptables-nft or iptables is installed")
        }
        let version = (try? Subprocess.run(["iptables-save", "--version"]))?.standardOutput ?? ""
        return IptablesBackend(kind: version.contains("nf_tables") ? .nft : .legacy, suffix: "")
    }

    enum Tool: String { case save, restore }

    /// E.g. `ip6tables-nft-restore`.
    func binary(_ tool: Tool, _ family: InPodRules.Family) -> String {
        "\(family == .ipv4 ? "iptables" : "ip6tables")\(self.variant)-\(tool.rawValue)"
    }

    /// Environment that keeps a run off the host-global xtables lock: legacy iptables ≥ 1.8.6
    /// takes its lock file from `XTABLES_LOCKFILE`, so in-pod runs use a pod-scoped file;
    /// nf_tables needs no lock.
    private func environment(lockFile: String?) -> [String: String] {
        guard self.kind == .legacy, let lockFile else { return [:] }
        return ["XTABLES_LOCKFILE": lockFile]
    }

    /// Runs `<family>-restore --noflush` with `payload` in the calling thread's namespace.
    func restore(_ payload: String, family: InPodRules.Family, lockFile: String?) throws(RedirectError) {
        var arguments = [self.binary(.restore, family), "--noflush"]
        if self.kind == .legacy { arguments += ["--wait", "30"] }
        let output = try Subprocess.run(arguments, input: payload, environment: self.environment(lockFile: lockFile))
        guard output.status == 0 else {
            throw RedirectError(
                .iptablesFailed,
                "\(arguments.joined(separator: " ")) exited \(output.status): \(output.standardError.trimmingTrailingNewlines)"
            )
        }
    }

    /// Runs `<family>-save` in the calling thread's namespace and parses its output.
    func save(family: InPodRules.Family, lockFile: String?) throws(RedirectError) -> IptablesSnapshot {
        let binary = self.binary(.save, family)
        let output = try Subprocess.run([binary], environment: self.environment(lockFile: lockFile))
        guard output.status == 0 else {
            throw RedirectError(.iptablesFailed, "\(binary) exited \(output.status): \(output.standardError.trimmingTrailingNewlines)")
        }
        return IptablesSnapshot(parsing: output.standardOutput)
    }
}

extension String {
    var trimmingTrailingNewlines: String {
        var text = self
        while text.last == "\n" { text.removeLast() }
        return text
    }
}
