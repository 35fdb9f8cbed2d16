/// The environment contract between runtime and plugin (SPEC 1.1 §"Parameters"):
/// `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`.
public struct CNIEnvironment: Hashable, Sendable {
    /// `CNI_COMMAND`.
    public enum Command: String, Hashable, Sendable, CaseIterable {
        case add = "ADD"
        case delete = "DEL"
        case check = "CHECK"
        case status = "STATUS"
        case garbageCollect = "GC"
        case version = "VERSION"

        /// The variables the command requires (Go `skel`'s table): ADD and CHECK need the
        /// container, netns, interface and path; DEL everything but the netns ("best effort");
        /// STATUS and GC only the path; VERSION nothing.
        var required: [String] {
            switch self {
            case .add, .check: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            case .delete: ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]
            case .status, .garbageCollect: ["CNI_PATH"]
            case .version: []
            }
        }
    }

    /// The command.
    public var command: Command
    /// `CNI_CONTAINERID`.
    public var containerID: String?
    /// `CNI_NETNS`: the container's network namespace path.
    public var networkNamespace: String?
    /// `CNI_IFNAME`.
    public var interfaceName: String?
    /// `CNI_ARGS` as ordered key/value pairs (`K=V;K=V`).
    public var arguments: [(key: String, value: String)]
    /// `CNI_PATH` split on `:`.
    public var path: [String]

    /// The value of `key` in `CNI_ARGS` (e.g. `K8S_POD_NAME`).
    public func argument(_ key: String) -> String? {
        self.arguments.first { $0.key == key }?.value
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.command == rhs.command && lhs.containerID == rhs.containerID && lhs.networkNamespace == rhs.networkNamespace
            && lhs.interfaceName == rhs.interfaceName && lhs.path == rhs.path
            && lhs.arguments.map(\.key) == rhs.arguments.map(\.key) && lhs.arguments.map(\.value) == rhs.arguments.map(\.value)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.command)
        hasher.combine(self.containerID)
        hasher.combine(self.networkNamespace)
    }

    /// Reads and validates the variables from `environment`.
    ///
    /// - Returns: `nil` when `CNI_COMMAND` is absent (the skeleton then prints its "about" text).
    /// - Throws: ``CNIError/Code/invalidEnvironment`` (4) naming every missing or malformed variable.
    public init?(_ environment: [String: String]) throws(CNIError) {
        guard let commandText = environment["CNI_COMMAND"] else { return nil }
        guard let command = Command(rawValue: commandText) else {
            throw CNIError(.invalidEnvironment, "unknown CNI_COMMAND \"\(commandText)\"")
        }
        let missing = command.required.filter { (environment[$0] ?? "").isEmpty }
        guard missing.isEmpty else {
            throw CNIError(.invalidEnvironment, "required env variables [\(missing.joined(separator: ","))] missing")
        }
        self.command = command
        self.containerID = environment["CNI_CONTAINERID"].flatMap { $0.isEmpty ? nil : $0 }
        self.networkNamespace = environment["CNI_NETNS"].flatMap { $0.isEmpty ? nil : $0 }
        self.interfaceName = environment["CNI_IFNAME"].flatMap { $0.isEmpty ? nil : $0 }
        self.path = (environment["CNI_PATH"] ?? "").split(separator: ":").map(String.init)
        if let containerID, !Self.isValidContainerID(containerID) {
            throw CNIError(.invalidEnvironment, "invalid CNI_CONTAINERID \"\(containerID)\"",
                           details: "must start with an alphanumeric character, then alphanumerics, '_', '.' or '-'")
        }
        if let interfaceName, let problem = Self.interfaceNameProblem(interfaceName) {
            throw CNIError(.invalidEnvironment, "invalid CNI_IFNAME \"\(interfaceName)\"", details: problem)
        }
        var arguments: [(String, String)] = []
        for pair in (environment["CNI_ARGS"] ?? "").split(separator: ";") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw CNIError(.invalidEnvironment, "invalid CNI_ARGS pair \"\(pair)\"", details: "expected K=V;K=V")
            }
            arguments.append((String(parts[0]), String(parts[1])))
        }
        self.arguments = arguments
    }

    /// SPEC: "a unique plaintext identifier … must not be empty. Must start with an
    /// alphanumeric character, optionally followed by any combination of one or more
    /// alphanumeric characters, underscore (), dot (.) or hyphen (-)."
    static func isValidContainerID(_ id: String) -> Bool {
        guard let first = id.unicodeScalars.first, first.isASCIIAlphanumeric else { return false }
        return id.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "_" || $0 == "." || $0 == "-" }
    }

    /// SPEC: "Must be no longer than 15 characters, must not be empty, must not be `.` or `..`,
    /// must not contain `/`, `:` or any whitespace."
    static func interfaceNameProblem(_ name: String) -> String? {
        if name.utf8.count > 15 { return "longer than 15 characters" }
        if name == "." || name == ".." { return "must not be . or .." }
        if name.unicodeScalars.contains(where: { $0 == "/" || $0 == ":" || $0.properties.isWhitespace }) {
            return "must not contain '/', ':' or whitespace"
        }
        return nil
    }
}

extension Unicode.Scalar {
    var isASCIIAlphanumeric: Bool {
        ("a"..."z").contains(self) || ("A"..."Z").contains(self) || ("0"..."9").contains(self)
    }
}
