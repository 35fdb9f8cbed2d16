import AmbientMigration
import Foundation
import MeshTestSupport
import Testing

/// Bad and unusual input: invalid YAML, non-objects, List dumps, unknown kinds, missing
/// namespaces, policies that select no Service.
@Suite("migration analyzer input handling")
struct InputTests {
    static func analyze(_ text: String, file: String = "input.yaml") -> MigrationReport {
        MigrationAnalyzer().analyze(ManifestLoader.parse(text, file: file))
    }

    @Test("invalid YAML is an error with file and line; the other files are still read")
    func invalidYAML() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ambient-migrate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\n  namespace: a\nspec:\n  selector: {app: ok\n".write(to: directory.appendingPathComponent("broken.yaml"), atomically: true, encoding: .utf8)
        try "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n".write(to: directory.appendingPathComponent("good.yml"), atomically: true, encoding: .utf8)
        try "not: [a manifest".write(to: directory.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let input = ManifestLoader.load(paths: [directory.path, directory.appendingPathComponent("missing.yaml").path])
        #expect(input.manifests.map(\.name) == ["a"])
        let errors = input.diagnostics.filter { $0.severity == .error }
        #expect(errors.count == 2, "\(errors)")
        let yaml = try #require(errors.first { $0.location?.file.hasSuffix("broken.yaml") == true })
        #expect(yaml.message.hasPrefix("invalid YAML at line"), "\(yaml.message)")
        #expect(yaml.location?.line != nil)
        #expect(errors.contains { $0.message == "no such file or directory" })
        #expect(MigrationAnalyzer().analyze(input).hasErrors)
    }

    @Test("documents that are not Kubernetes objects are errors, empty documents are skipped")
    func notObjects() {
        let input = ManifestLoader.parse("---\n- a\n- b\n---\nname: x\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {}\n", file: "odd.yaml")
        #expect(input.manifests.isEmpty)
        #expect(input.diagnostics.map(\.message) == [
            "document 1 is not a Kubernetes object (a mapping with apiVersion and kind)",
            "document 2 has no kind or apiVersion: not a Kubernetes object",
            "Service in document 4 has no metadata.name",
        ])
        #expect(input.diagnostics.allSatisfy { $0.severity == .error && $0.location?.file == "odd.yaml" })
    }

    @Test("aliases are read, but a file they expand past the limit (\"billion laughs\") is refused quickly")
    func aliasExpansion() {
        // Ten levels of nine aliases each: 9^10 strings from 700 bytes.
        var lines = ["  a0: &a0 [" + Array(repeating: "lol", count: 9).joined(separator: ",") + "]"]
        for level in 1..<10 {
            lines.append("  a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ",") + "]")
        }
        let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: &labels {team: a}}\n"
        let bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: shop}\ndata:\n" + lines.joined(separator: "\n") + "\n"
        let clock = ContinuousClock()
        let start = clock.now
        let input = ManifestLoader.parse(namespace + "---\n" + bomb + "---\n" + namespace, file: "laughs.yaml")
        #expect(clock.now - start < .seconds(30), "the limit stops the walk, not the memory")
        #expect(input.manifests.map(\.name) == ["shop"], "the document before is read, the rest of the file is not")
        #expect(input.diagnostics.map(\.message) == [
            "YAML aliases expand the file to more than \(ManifestLoader.maximumValues) values at document 2: it and the rest of the file are not read",
        ])
        #expect(input.diagnostics.first?.severity == .error && input.diagnostics.first?.location?.line == 5, "the document starts on line 5")
        // A few aliases, as people use them, are expanded.
        let shared = ManifestLoader.parse(namespace + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: cart, labels: *labels}\n", file: "ok.yaml")
        #expect(shared.diagnostics.isEmpty, "\(shared.diagnostics)")
        #expect(shared.manifests.map(\.labels) == [["team": "a"], ["team": "a"]])
    }

    @Test("kubectl List dumps are flattened")
    func lists() {
        let input = ManifestLoader.parse("""
            apiVersion: v1
            kind: List
            items:
            - apiVersion: v1
              kind: Service
              metadata: {name: a, namespace: x}
            - apiVersion: security.istio.io/v1
              kind: AuthorizationPolicyList
              items:
              - apiVersion: security.istio.io/v1
                kind: AuthorizationPolicy
                metadata: {name: p, namespace: x}
            """, file: "dump.yaml")
        #expect(input.diagnostics.isEmpty)
        #expect(input.manifests.map(\.id.description) == ["Service x/a", "AuthorizationPolicy x/p"])
    }

    @Test("a kubectl dump's server fields (status, managedFields, uid, resourceVersion) stay out of the twins")
    func serverFields() throws {
        let report = MigrationAnalyzer().analyze(ManifestLoader.parse("""
            apiVersion: v1
            items:
            - apiVersion: v1
              kind: Service
              metadata: {name: api, namespace: shop, uid: 5d1c, resourceVersion: "991"}
              spec: {selector: {app: api}, clusterIP: 10.96.4.2, ports: [{port: 80, protocol: TCP, targetPort: 8080}]}
              status: {loadBalancer: {}}
            - apiVersion: apps/v1
              kind: Deployment
              metadata: {name: api, namespace: shop}
              spec: {template: {metadata: {labels: {app: api}}}}
              status: {replicas: 2}
            - apiVersion: security.istio.io/v1
              kind: AuthorizationPolicy
              metadata:
                name: get-only
                namespace: shop
                uid: 0b7e
                resourceVersion: "1234"
                generation: 3
                creationTimestamp: "2026-11-01T10:00:00Z"
                annotations:
                  kubectl.kubernetes.io/last-applied-configuration: '{"apiVersion":"security.istio.io/v1"}'
                managedFields: [{manager: kubectl, operation: Update}]
              spec:
                selector: {matchLabels: {app: api}}
                rules: [{to: [{operation: {methods: [GET]}}]}]
              status: {validationMessages: [{type: {code: IST0001}}]}
            kind: List
            metadata: {resourceVersion: ""}
            """, file: "dump.yaml"))
        #expect(!report.hasErrors)
        let twin = try #require(report.plan.generated("AuthorizationPolicy", "shop", "get-only-waypoint"))
        let parsed = try #require(ManifestLoader.parse(twin.yaml, file: "t").manifests.first)
        #expect(parsed.body.entries?.map(\.key) == ["apiVersion", "kind", "metadata", "spec"])
        #expect(parsed.body["metadata"]?.entries?.map(\.key) == ["name", "namespace"])
        #expect(parsed.spec.entries?.map(\.key) == ["targetRefs", "rules"])
    }

    @Test("unknown kinds are listed with a note, not fatal")
    func unknownKinds() {
        let report = Self.analyze("""
            apiVersion: networking.istio.io/v1alpha3
            kind: EnvoyFilter
            metadata: {name: lua, namespace: x}
            ---
            apiVersion: example.com/v1
            kind: Widget
            metadata: {name: w, namespace: x}
            """)
        #expect(!report.hasErrors)
        #expect(report.findings.map(\.placement) == [.unknown, .unknown])
        #expect(report.diagnostics.filter { $0.message.hasPrefix("unknown kind") }.count == 2)
    }

    @Test("missing namespaces: undeclared metadata.namespace, no Namespace object, unknown policy namespace")
    func missingNamespaces() {
        let report = Self.analyze("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: app}
            spec:
              template:
                metadata: {labels: {app: app}}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: from-elsewhere, namespace: default}
            spec:
              rules:
              - from:
                - source: {namespaces: [nowhere]}
            """)
        let messages = report.diagnostics.map(\.message)
        #expect(messages.contains { $0.hasPrefix("no metadata.namespace: assumed \"default\"") })
        #expect(messages.contains { $0.hasPrefix("missing namespace: workloads use namespace default") })
        #expect(messages.contains("refers to namespace nowhere, which is not in the input (missing namespace, or a typo?)"))
        #expect(report.plan.namespaces.first?.remove == ["istio-injection", "istio.io/rev"])
    }

    @Test("a policy selecting no Service is warned with the reason, and left for manual work")
    func selectsNoService() {
        let report = Self.analyze("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: worker, namespace: jobs}
            spec:
              template:
                metadata: {labels: {app: worker}}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: worker-get, namespace: jobs}
            spec:
              selector: {matchLabels: {app: worker}}
              rules:
              - to: [{operation: {methods: [GET]}}]
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: ghost-get, namespace: jobs}
            spec:
              selector: {matchLabels: {app: ghost}}
              rules:
              - to: [{operation: {methods: [GET]}}]
            """)
        let warnings = report.diagnostics.filter { $0.severity == .warning && $0.message.hasPrefix("selects no Service") }
        #expect(warnings.first { $0.resource?.name == "worker-get" }?.message.contains("matches Deployment worker, but no Service in namespace jobs selects those pods") == true)
        #expect(warnings.first { $0.resource?.name == "ghost-get" }?.message.contains("matches no Deployment or Pod in namespace jobs") == true)
        #expect(Set(report.plan.manual.map(\.resource.name)) == ["worker-get", "ghost-get"])
        #expect(report.plan.generated.filter { $0.resource.kind == "AuthorizationPolicy" }.isEmpty)
    }

    @Test("fuzz: mutated fixture files never crash the loader or the analyzer", arguments: [UInt64(71), 72])
    func fuzz(seed: UInt64) throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/shop")
        let files = try FileManager.default.contentsOfDirectory(atPath: fixture.path).sorted()
        var generator = SeededGenerator(seed: seed)
        var errors = 0
        for round in 0..<300 {
            let file = files[round % files.count]
            let bytes = try [UInt8](Data(contentsOf: fixture.appendingPathComponent(file)))
            let text = String(decoding: generator.mutate(bytes), as: UTF8.self)
            let input = ManifestLoader.parse(text, file: file)
            let report = MigrationAnalyzer().analyze(input)
            errors += report.hasErrors ? 1 : 0
            #expect(report.diagnostics.allSatisfy { !$0.message.isEmpty }, "seed \(seed) round \(round)")
            _ = report.text(color: false)
        }
        #expect(errors > 0, "no mutation produced invalid input: the fuzzer is not reaching the error paths")
    }
}
