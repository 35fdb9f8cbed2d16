/// CNI specification versions (`cniVersion`): "Semantic Version 2.0 of CNI specification".
public struct CNIVersion: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Major, minor, patch.
    public var major: Int, minor: Int, patch: Int

    /// Parses `x.y.z` (SemVer core, no pre-release); `nil` for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let major = Int(parts[0]), let minor = Int(parts[1]), let patch = Int(parts[2]),
              major >= 0, minor >= 0, patch >= 0, !parts.contains(where: { $0.count > 1 && $0.first == "0" })
        else { return nil }
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    public var description: String { "\(self.major).\(self.minor).\(self.patch)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }

    /// Every published version: what `containernetworking/cni`'s `version.All` lists and
    /// istio-cni supports.
    public static let all: [CNIVersion] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].compactMap(CNIVersion.init)

    /// 0.4.0: the first version with CHECK.
    public static let v0_4_0 = CNIVersion("0.4.0")!
    /// 1.0.0.
    public static let v1_0_0 = CNIVersion("1.0.0")!
    /// 1.1.0: the first version with STATUS and GC.
    public static let v1_1_0 = CNIVersion("1.1.0")!
    /// 0.3.0: the first version with the `ips`/`interfaces` result format.
    public static let v0_3_0 = CNIVersion("0.3.0")!
}
