public import Foundation

/// One invocation of a plugin: the validated environment and the network configuration
/// from stdin.
public struct CNIRequest: Sendable {
    /// The environment.
    public var environment: CNIEnvironment
    /// The whole configuration object as given (plugin-specific keys included).
    public var configuration: JSONValue
    /// `cniVersion` of the configuration.
    public var cniVersion: String
    /// `name` (the network name).
    public var networkName: String
    /// `type` (the plugin binary name).
    public var type: String

    /// `prevResult`, decoded and converted to the 1.x shape; `nil` when absent.
    public func previousResult() throws(CNIError) -> CNIResult? {
        guard let raw = self.configuration["prevResult"], raw != .null else { return nil }
        return try CNIResult(decoding: raw, version: self.cniVersion)
    }

    /// Decodes the configuration (with the plugin's own keys) as `T`.
    /// - Throws: ``CNIError/Code/invalidConfiguration`` naming the defect.
    public func decode<T: Decodable>(_ type: T.Type) throws(CNIError) -> T {
        do {
            return try self.configuration.decode(T.self)
        } catch {
            throw CNIError(.invalidConfiguration, "invalid plugin configuration", details: "\(error)")
        }
    }
}

/// A CNI plugin: what it does for each command. The ``CNISkeleton`` does everything the
/// spec requires around it (environment, version negotiation, output, exit status).
public protocol CNIPlugin: Sendable {
    /// The `cniVersion`s the plugin accepts (default: all of ``CNIVersion/all``).
    var supportedVersions: [CNIVersion] { get }
    /// A line for the "about" text printed when `CNI_COMMAND` is unset.
    var about: String { get }
    /// ADD: returns the result to print ("a plugin given prevResult MUST output it").
    func add(_ request: CNIRequest) throws(CNIError) -> JSONValue
    /// DEL: best effort and idempotent.
    func delete(_ request: CNIRequest) throws(CNIError)
    /// CHECK (config ≥ 0.4.0).
    func check(_ request: CNIRequest) throws(CNIError)
    /// STATUS (config ≥ 1.1.0). Default: available.
    func status(_ request: CNIRequest) throws(CNIError)
    /// GC (config ≥ 1.1.0). Default: nothing to collect.
    func garbageCollect(_ request: CNIRequest) throws(CNIError)
}

extension CNIPlugin {
    public var supportedVersions: [CNIVersion] { CNIVersion.all }
    public func status(_ request: CNIRequest) throws(CNIError) {}
    public func garbageCollect(_ request: CNIRequest) throws(CNIError) {}
}

/// Runs a ``CNIPlugin`` as the spec's executable contract, like Go's `pkg/skel`:
/// config JSON on stdin, result or error JSON on stdout, exit 0 on success and 1 on error.
/// Logs never go to stdout ("stdout is reserved for the result").
public enum CNISkeleton {
    /// What one invocation produced.
    public struct Outcome: Sendable {
        /// The exit status.
        public var status: Int32
        /// What goes to stdout (result or error JSON, or nothing).
        public var standardOutput: Data
        /// What goes to stderr (the "about" text).
        public var standardError: Data
    }

    /// Runs `plugin` for `environment` and `stdin` without touching the process's streams
    /// (for tests and embedding); ``main(_:)`` writes the outcome out.
    public static func run(_ plugin: some CNIPlugin, environment: [String: String], stdin: Data) -> Outcome {
        // Errors are reported at the request's version when stdin says which one.
        var version = (try? JSONValue(parsing: stdin))?["cniVersion"]?.stringValue ?? CNIVersion.all.last!.description
        do throws(CNIError) {
            guard let env = try CNIEnvironment(environment) else {
                let versions = plugin.supportedVersions.map(\.description).joined(separator: ", ")
                return Outcome(status: 0, standardOutput: Data(), standardError: Data("\(plugin.about)\nCNI protocol versions supported: \(versions)\n".utf8))
            }
            if env.command == .version {
                let requested = (try? JSONValue(parsing: stdin))?["cniVersion"]?.stringValue
                let body: JSONValue = .object([
                    "cniVersion": .string(requested ?? version),
                    "supportedVersions": .array(plugin.supportedVersions.map { .string($0.description) }),
                ])
                return Outcome(status: 0, standardOutput: body.jsonData, standardError: Data())
            }
            let configuration: JSONValue
            do {
                configuration = try JSONValue(parsing: stdin)
            } catch {
                throw CNIError(.decodingFailure, "error parsing the network configuration", details: "\(error)")
            }
            guard case .object = configuration else { throw CNIError(.decodingFailure, "the network configuration is not a JSON object") }
            guard let versionText = configuration["cniVersion"]?.stringValue else {
                throw CNIError(.invalidConfiguration, "the network configuration has no cniVersion")
            }
            version = versionText
            guard let parsed = CNIVersion(versionText), plugin.supportedVersions.contains(parsed) else {
                throw CNIError(.incompatibleVersion, "incompatible CNI versions",
                               details: "config is \"\(versionText)\", plugin supports \(plugin.supportedVersions.map(\.description))")
            }
            switch env.command {
            case .check where parsed < .v0_4_0:
                throw CNIError(.incompatibleVersion, "config version does not allow CHECK", details: "CHECK needs cniVersion 0.4.0 or later")
            case .status where parsed < .v1_1_0, .garbageCollect where parsed < .v1_1_0:
                throw CNIError(.incompatibleVersion, "config version does not allow \(env.command.rawValue)", details: "needs cniVersion 1.1.0 or later")
            default:
                break
            }
            let request = CNIRequest(
                environment: env, configuration: configuration, cniVersion: versionText,
                networkName: configuration["name"]?.stringValue ?? "", type: configuration["type"]?.stringValue ?? ""
            )
            switch env.command {
            case .add:
                let result = try plugin.add(request)
                return Outcome(status: 0, standardOutput: result.jsonData, standardError: Data())
            case .delete: try plugin.delete(request)
            case .check: try plugin.check(request)
            case .status: try plugin.status(request)
            case .garbageCollect: try plugin.garbageCollect(request)
            case .version: break
            }
            return Outcome(status: 0, standardOutput: Data(), standardError: Data())
        } catch {
            return Outcome(status: 1, standardOutput: error.json(version: version).jsonData, standardError: Data())
        }
    }

    /// Reads the process environment and stdin, runs `plugin`, writes the outcome and exits.
    public static func main(_ plugin: some CNIPlugin) -> Never {
        let stdin = FileHandle.standardInput.readDataToEndOfFile()
        let outcome = Self.run(plugin, environment: ProcessInfo.processInfo.environment, stdin: stdin)
        FileHandle.standardOutput.write(outcome.standardOutput)
        FileHandle.standardError.write(outcome.standardError)
        exit(outcome.status)
    }
}
