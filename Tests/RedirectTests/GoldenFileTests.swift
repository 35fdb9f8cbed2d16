import Foundation
import Redirect
import Testing

/// Every rule variant against a golden file in `Tests/RedirectTests/Goldens/`.
///
/// The files are written by this project's renderer from the rule facts; regenerate them
/// after an intended change with
///
///     REFRESH_GOLDEN=1 swift test --filter GoldenFileTests
///
/// and review the diff. `default.golden` is additionally pinned to Istio's own
/// `cni/pkg/iptables/testdata/default.golden`, so a refresh cannot drift from Istio.
@Suite("Golden files of every rule variant")
struct GoldenFileTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let render: @Sendable () -> String
        var testDescription: String { self.name }
    }

    static func inPod(_ family: InPodRules.Family, _ configure: @escaping @Sendable (inout InPodRules.Configuration) -> Void = { _ in }) -> @Sendable () -> String {
        {
            var configuration = InPodRules.Configuration()
            configure(&configuration)
            return IptablesRenderer.restorePayload(InPodRules.ruleSet(configuration, family: family))
        }
    }

    static let cases: [Case] = [
        Case(name: "default", render: inPod(.ipv4)),
        Case(name: "default_ipv6", render: inPod(.ipv6)),
        Case(name: "dns_off", render: inPod(.ipv4) { $0.captureDNS = false }),
        Case(name: "dns_off_ipv6", render: inPod(.ipv6) { $0.captureDNS = false }),
        Case(name: "ingress", render: inPod(.ipv4) { $0.bypassInboundCapture = true }),
        Case(name: "ingress_ipv6", render: inPod(.ipv6) { $0.bypassInboundCapture = true }),
        Case(name: "virtual_interfaces", render: inPod(.ipv4) { $0.rerouteVirtualInterfaces = ["tap0", "tap1"] }),
        Case(name: "virtual_interfaces_ipv6", render: inPod(.ipv6) { $0.rerouteVirtualInterfaces = ["tap0", "tap1"] }),
        Case(name: "ingress_and_virtual_interfaces", render: inPod(.ipv4) {
            $0.bypassInboundCapture = true
            $0.rerouteVirtualInterfaces = ["tap0", "tap1"]
        }),
        Case(name: "hostprobe", render: { IptablesRenderer.restorePayload(HostProbeRules.ruleSet(family: .ipv4)) }),
        Case(name: "hostprobe_ipv6", render: { IptablesRenderer.restorePayload(HostProbeRules.ruleSet(family: .ipv6)) }),
    ]

    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Goldens")

    @Test("rendered payload equals its golden file", arguments: Self.cases)
    func golden(_ testCase: Case) throws {
        let rendered = testCase.render()
        let file = Self.directory.appendingPathComponent("\(testCase.name).golden")
        if ProcessInfo.processInfo.environment["REFRESH_GOLDEN"] != nil {
            try FileManager.default.createDirectory(at: Self.directory, withIntermediateDirectories: true)
            try Data(rendered.utf8).write(to: file)
        }
        let golden = try String(contentsOf: file, encoding: .utf8)
        #expect(rendered == golden, "\(testCase.name): regenerate with REFRESH_GOLDEN=1 if the change is intended")
        if testCase.name == "default" {
            #expect(golden == InPodRulesTests.defaultGolden, "default.golden is Istio's default.golden byte for byte")
        }
    }
}
