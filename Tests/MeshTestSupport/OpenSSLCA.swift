internal import Foundation

/// A CA made and operated by the `openssl` command-line tool: an independent issuer
/// whose certificates our verifier must accept or reject, and a check on ours.
public final class OpenSSLCA: Sendable {
    /// Working directory with `root.pem` and `root.key`.
    public let directory: TemporaryDirectory

    /// Whether the `openssl` binary is available.
    public static var isAvailable: Bool { ExternalTool.isAvailable("openssl") }

    /// Creates a P-256 root CA with `subject` (for example `/O=cluster.local`).
    public init(subject: String = "/O=openssl-root") async throws {
        self.directory = try TemporaryDirectory(prefix: "openssl-ca")
        try OpenSSLCA.check(
            await ExternalTool.run([
                "openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path("root.key"), "-out", self.path("root.pem"), "-days", "30", "-subj", subject,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
        )
    }

    /// The path of `name` in the working directory.
    public func path(_ name: String) -> String { self.directory.url.appendingPathComponent(name).path }

    /// The root certificate PEM.
    public var rootPEM: String { (try? String(contentsOfFile: self.path("root.pem"), encoding: .utf8)) ?? "" }

    /// Issues a leaf for a fresh P-256 key with the given `extensions` lines (openssl
    /// extension-file syntax) and returns its PEM.
    public func issueLeaf(name: String, extensions: [String], days: Int = 1) async throws -> String {
        try OpenSSLCA.check(
            await ExternalTool.run([
                "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path("\(name).key"), "-out", self.path("\(name).csr"), "-subj", "/",
            ])
        )
        try self.directory.write("\(name).ext", extensions.joined(separator: "\n") + "\n")
        try OpenSSLCA.check(
            await ExternalTool.run([
                "openssl", "x509", "-req", "-in", self.path("\(name).csr"), "-CA", self.path("root.pem"),
                "-CAkey", self.path("root.key"), "-CAcreateserial", "-days", "\(days)",
                "-extfile", self.path("\(name).ext"), "-out", self.path("\(name).pem"),
            ])
        )
        return try String(contentsOfFile: self.path("\(name).pem"), encoding: .utf8)
    }

    /// Makes a CSR with openssl for a key of `keySpec` (`ec:P-256`, `rsa:1024`, `ed25519`, …).
    public static func makeCSR(keySpec: String, subject: String = "/", extensions: [String] = [], in directory: TemporaryDirectory) async throws -> String {
        let key = directory.url.appendingPathComponent("csr-\(UUID().uuidString).key").path
        let out = directory.url.appendingPathComponent("csr-\(UUID().uuidString).csr").path
        var arguments = ["openssl", "req", "-new", "-nodes", "-keyout", key, "-out", out, "-subj", subject]
        let parts = keySpec.split(separator: ":").map(String.init)
        switch parts[0] {
        case "ec": arguments += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:\(parts[1])"]
        case "rsa": arguments += ["-newkey", "rsa:\(parts[1])"]
        default: arguments += ["-newkey", parts[0]]
        }
        for line in extensions { arguments += ["-addext", line] }
        try check(await ExternalTool.run(arguments))
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    /// Throws when a tool run failed.
    @discardableResult
    public static func check(_ result: ToolResult) throws -> ToolResult {
        struct ToolFailed: Error, CustomStringConvertible {
            let description: String
        }
        guard result.status == 0 else { throw ToolFailed(description: "exit \(result.status): \(result.combined)") }
        return result
    }
}
