import AmbientMigration
import Foundation
import MeshTestSupport
import Testing

/// The generated manifests read back by a YAML parser that shares no code with ours:
/// PyYAML's pure-Python `safe_load`, a YAML 1.1 reader like the go-yaml that `kubectl`
/// and the API server use (where `on`, `yes`, `0x1F`, `1:20` and dates are not strings).
@Suite("generated manifests read the same in PyYAML")
struct IndependentReaderTests {
    /// Values a YAML 1.1 reader would turn into something else if written unquoted.
    static let tricky = [
        "on", "off", "yes", "no", "No", "y", "Y", "n", "N", "true", "null", "~", "", "1.0", "0x1F", "0o17", "017", "08", "1e3", "1_000", "1:20",
        ".inf", "2026-01-01", "2026-01-01T10:00:00Z", "=", "<<", "- dash", "a: b", "#hash", "*star", "&anchor", "!tag",
        "'single'", "\"double\"", "trailing ", " leading", "multi\nline", "tab\there", "ünïcødé",
    ]

    static let reader = """
        import sys, json, yaml
        def walk(x):
            if isinstance(x, dict): return {str(k): walk(v) for k, v in x.items()}
            if isinstance(x, list): return [walk(v) for v in x]
            if x is None or isinstance(x, (str, int, bool)): return x
            return "<%s %s>" % (type(x).__name__, x)
        print(json.dumps([walk(d) for d in yaml.safe_load_all(sys.stdin)]))
        """

    @Test("strings, labels, ports and the targetRefs group survive a YAML 1.1 reader")
    func pyyaml() async throws {
        let check = try await ExternalTool.run(["python3", "-c", "import yaml"])
        try #require(check.status == 0, "PyYAML is missing: ./scripts/install-deps installs it")
        var labels = ""
        for (index, value) in Self.tricky.enumerated() {
            labels += "      k\(index): \(Self.quoted(value))\n"
        }
        let policy = """
            apiVersion: v1
            kind: Service
            metadata: {name: api, namespace: shop}
            spec: {selector: {app: api}, ports: [{port: 80}]}
            ---
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: api, namespace: shop}
            spec: {template: {metadata: {labels: {app: api}}}}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata:
              name: tricky
              namespace: shop
              labels:
            \(labels)spec:
              selector: {matchLabels: {app: api}}
              rules:
              - from: [{source: {principals: [\(Self.tricky.map(Self.quoted).joined(separator: ", "))]}}]
                to: [{operation: {ports: ["8080"], paths: [\(Self.tricky.map(Self.quoted).joined(separator: ", "))]}}]

            """
        let report = MigrationAnalyzer().analyze(ManifestLoader.parse(policy, file: "tricky.yaml"))
        let twin = try #require(report.plan.generated("AuthorizationPolicy", "shop", "tricky-waypoint"))
        let result = try await ExternalTool.run(["python3", "-c", Self.reader], input: twin.yaml)
        #expect(result.status == 0, "\(result.combined)")
        let documents = try #require(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [[String: Any]])
        let object = try #require(documents.first)
        let metadata = try #require(object["metadata"] as? [String: Any])
        let readLabels = try #require(metadata["labels"] as? [String: Any])
        for (index, value) in Self.tricky.enumerated() {
            #expect(readLabels["k\(index)"] as? String == value, "label k\(index) \(value.debugDescription) read as \(String(describing: readLabels["k\(index)"]))")
        }
        let spec = try #require(object["spec"] as? [String: Any])
        let refs = try #require(spec["targetRefs"] as? [[String: Any]])
        #expect(refs.first?["group"] as? String == "")
        #expect(refs.first?["kind"] as? String == "Service")
        let rule = try #require((spec["rules"] as? [[String: Any]])?.first)
        let source = try #require(((rule["from"] as? [[String: Any]])?.first?["source"]) as? [String: Any])
        #expect(source["principals"] as? [String] == Self.tricky)
        let operation = try #require(((rule["to"] as? [[String: Any]])?.first?["operation"]) as? [String: Any])
        #expect(operation["paths"] as? [String] == Self.tricky)
        #expect(operation["ports"] as? [String] == ["8080"])
        // go-yaml v2, which kubectl uses, also reads a plain y/n as a boolean; PyYAML does not.
        for flag in ["y", "Y", "n", "N", "on", "no"] {
            #expect(twin.yaml.contains("- \"\(flag)\"\n"), "\(flag) is not quoted:\n\(twin.yaml)")
        }
    }

    /// A YAML double-quoted scalar for the input.
    static func quoted(_ value: String) -> String {
        var out = "\""
        for character in value.unicodeScalars {
            switch character {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(character)
            }
        }
        return out + "\""
    }
}
