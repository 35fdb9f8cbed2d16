import Foundation

/// Puts the plugin into the node's CNI configuration the way istio-cni's installer does
/// (`cni/pkg/install/cniconfig.go`, notes §1.3): take the lexically first `.conf` or
/// `.conflist` in the config directory (what kubelet uses), drop any existing
/// `type: istio-cni` entry, append ours last, and write the file back atomically; a bare
/// `.conf` becomes a `.conflist` keeping its `name` and `cniVersion` (falling back to
/// `k8s-pod-network` and `0.3.1` when absent) with `plugins: [original, ours]`. Our entry
/// carries no `cniVersion`: the list's applies.
public enum CNIConfigInstaller {
    /// The plugin's `type` (and binary name).
    public static let pluginType = "istio-cni"

    /// Installs `plugin` (a JSON object of Istio's keys; `type` is set) into `directory`.
    /// Returns the path written.
    @discardableResult
    public static func install(plugin: [String: Any], into directory: String) throws(AgentError) -> String {
        let (path, object) = try Self.primary(in: directory)
        var list = object
        var written = path
        if path.hasSuffix(".conf") {
            list = ["name": object["name"] ?? "k8s-pod-network", "cniVersion": object["cniVersion"] ?? "0.3.1", "plugins": [object]]
            written = String(path.dropLast(".conf".count)) + ".conflist"
        }
        var plugins = (list["plugins"] as? [[String: Any]] ?? []).filter { ($0["type"] as? String) != Self.pluginType }
        var ours = plugin
        ours["type"] = Self.pluginType
        ours["name"] = ours["name"] ?? Self.pluginType
        ours.removeValue(forKey: "cniVersion")
        plugins.append(ours)
        list["plugins"] = plugins
        try Self.write(list, to: written)
        if written != path { try? FileManager.default.removeItem(atPath: path) }
        return written
    }

    /// Removes our entry from the primary configuration (uninstall).
    public static func uninstall(from directory: String) throws(AgentError) {
        let (path, object) = try Self.primary(in: directory)
        guard var plugins = object["plugins"] as? [[String: Any]] else { return }
        plugins.removeAll { ($0["type"] as? String) == Self.pluginType }
        var list = object
        list["plugins"] = plugins
        try Self.write(list, to: path)
    }

    static func primary(in directory: String) throws(AgentError) -> (String, [String: Any]) {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".conf") || $0.hasSuffix(".conflist") }.sorted()
        for name in names {
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
            if name.hasSuffix(".conflist"), object["plugins"] as? [[String: Any]] == nil { continue }
            if name.hasSuffix(".conf"), object["type"] as? String == nil { continue }
            return (path, object)
        }
        throw AgentError(.invalidMetadata, "no valid .conf or .conflist in \(directory)")
    }

    static func write(_ object: [String: Any], to path: String) throws(AgentError) {
        do {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            let existing = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            try FileManager.default.setAttributes([.posixPermissions: existing ?? 0o600], ofItemAtPath: path)
        } catch {
            throw AgentError(.invalidMetadata, "writing \(path): \(error)")
        }
    }
}
