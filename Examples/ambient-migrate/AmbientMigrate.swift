import AmbientMigration
import ArgumentParser
import Foundation

/// `ambient-migrate`: reads sidecar-mode manifests and says what the node proxy can
/// enforce, what needs a waypoint, and how to move (Docs/migration.md).
@main
struct AmbientMigrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ambient-migrate",
        abstract: "Plan the move of an Istio sidecar-mode mesh to ambient mode: L4 at the node proxy, L7 at waypoints.",
        discussion: """
        Reads Kubernetes manifests or `kubectl get ... -o yaml` dumps (files or directories, \
        multi-document YAML, List kinds). Exit status: 0 when every input was read, 1 when \
        some input could not be read (the report still covers the rest), 64 for bad usage.
        """
    )

    enum Output: String, ExpressibleByArgument, CaseIterable { case text, json }
    enum Color: String, ExpressibleByArgument, CaseIterable { case auto, always, never }

    @Argument(help: "Manifest files or directories.")
    var paths: [String]

    @Option(help: "Report format: text (a table) or json.")
    var output: Output = .text

    @Option(help: "Write the generated manifests (targetRefs policies, waypoints, HTTPRoutes) under this directory.")
    var emit: String?

    @Option(help: "Colour in the text report: auto (when stdout is a terminal), always or never.")
    var color: Color = .auto

    @Option(help: "Namespace for objects that declare none.")
    var defaultNamespace = "default"

    @Option(help: "Istio's root namespace (policies there without a selector are mesh-wide).")
    var rootNamespace = "istio-system"

    @Option(help: "The mesh's trust domain, for waypoint identities.")
    var trustDomain = "cluster.local"

    @Option(help: "The cluster's DNS domain, in hostnames such as reviews.backend.svc.<domain>.")
    var domainSuffix = "cluster.local"

    @Option(help: "The name of new waypoints (and of their service accounts).")
    var waypointName = "waypoint"

    mutating func run() throws {
        var configuration = MigrationAnalyzer.Configuration()
        configuration.rootNamespace = self.rootNamespace
        configuration.trustDomain = self.trustDomain
        configuration.domainSuffix = self.domainSuffix
        configuration.waypointName = self.waypointName
        if let emit { configuration.emitDirectory = emit }
        let input = ManifestLoader.load(paths: self.paths, defaultNamespace: self.defaultNamespace)
        let report = MigrationAnalyzer(configuration: configuration).analyze(input)

        if let emit {
            for manifest in report.plan.generated {
                let url = URL(fileURLWithPath: emit).appendingPathComponent(manifest.path)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(manifest.yaml.utf8).write(to: url)
            }
        }
        switch self.output {
        case .json:
            print(try report.jsonText(), terminator: "")
        case .text:
            let useColor = self.color == .always || (self.color == .auto && isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil)
            print(report.text(color: useColor), terminator: "")
            if let emit { print("\nwrote \(report.plan.generated.count) manifests under \(emit)") }
        }
        if report.hasErrors { throw ExitCode(1) }
    }
}
