/// A CNI error result (SPEC 1.1 §"Error"): printed on stdout as
/// `{"cniVersion": …, "code": N, "msg": "…", "details": "…"}` with a non-zero exit status.
///
/// "Error codes 0-99 are reserved for well-known errors. Values of 100+ can be freely used
/// for plugin specific errors." The well-known codes are ``Code``.
public struct CNIError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The spec's well-known error codes, plus 999, what Go's `skel` reports for a plain
    /// error returned by a plugin (istio-cni's ADD failures arrive with this code).
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// 1: incompatible CNI version.
        public static let incompatibleVersion = Code(rawValue: 1)
        /// 2: unsupported field in network configuration.
        public static let unsupportedField = Code(rawValue: 2)
        /// 3: container unknown or does not exist.
        public static let unknownContainer = Code(rawValue: 3)
        /// 4: invalid necessary environment variables, like `CNI_COMMAND`, `CNI_CONTAINERID`, etc.
        public static let invalidEnvironment = Code(rawValue: 4)
        /// 5: I/O failure.
        public static let ioFailure = Code(rawValue: 5)
        /// 6: failed to decode content.
        public static let decodingFailure = Code(rawValue: 6)
        /// 7: invalid network config.
        public static let invalidConfiguration = Code(rawValue: 7)
        /// 8: invalid netns (skel: the plugin's own namespace given as `CNI_NETNS`).
        public static let invalidNetworkNamespace = Code(rawValue: 8)
        /// 11: try again later.
        public static let tryAgainLater = Code(rawValue: 11)
        /// 50: the plugin is not available (STATUS).
        public static let pluginNotAvailable = Code(rawValue: 50)
        /// 51: the plugin is available but has limited connectivity (STATUS).
        public static let limitedConnectivity = Code(rawValue: 51)
        /// 999: an internal error of the plugin (Go `skel`'s `ErrInternal`).
        public static let `internal` = Code(rawValue: 999)
    }

    /// The code.
    public var code: Code
    /// `msg`: a short message characterising the error.
    public var message: String
    /// `details`: a longer message describing the error.
    public var details: String

    /// Creates an error.
    public init(_ code: Code, _ message: String, details: String = "") {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String {
        "CNI error \(self.code.rawValue): \(self.message)" + (self.details.isEmpty ? "" : " (\(self.details))")
    }

    /// The error JSON for a request at `version`.
    public func json(version: String) -> JSONValue {
        var object: [String: JSONValue] = [
            "cniVersion": .string(version), "code": .number(Double(self.code.rawValue)), "msg": .string(self.message),
        ]
        if !self.details.isEmpty { object["details"] = .string(self.details) }
        return .object(object)
    }
}
