import Foundation
import MeshTestSupport
import Testing

/// The whole mesh on one machine, exactly as `Examples/onebox/onebox.sh` runs it for a user:
/// real namespaces, the real CNI chain, the node agent, ztunnel, the embedded CA. The script
/// uses the binaries this test run was built with.
@Suite("One-box ambient mesh (end to end)", .serialized,
       .enabled(if: Capability.canCreateNetworkNamespaces, "needs root and `ip netns` (CI has both)"),
       .enabled(if: FileManager.default.fileExists(atPath: "/usr/lib/cni/bridge"), "needs containernetworking-plugins"))
struct OneBoxTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path

    @Test("HBONE between pods with no plaintext on the wire, ALLOW by principal and 401 for the other, STRICT for plaintext, TCP and passthrough destinations, probes")
    func scenarios() async throws {
        let directory = try TemporaryDirectory(prefix: "hbone-onebox")
        let run = try await offload {
            try ExternalTool.run(
                ["env", "ONEBOX_BIN=\(Self.binaries)", "ONEBOX_DIR=\(directory.url.path)", "bash", Self.root.appendingPathComponent("Examples/onebox/onebox.sh").path],
                timeout: .seconds(240)
            )
        }
        let output = run.standardOutput
        #expect(run.status == 0, "\(output)\n\(run.standardError)")
        let lines = output.components(separatedBy: "\n")
        func after(_ heading: String, _ offset: Int = 1) -> String {
            guard let index = lines.firstIndex(where: { $0.hasPrefix(heading) }), index + offset < lines.count else { return "" }
            return lines[index + offset]
        }
        // 1. allowed client: 200, and on the node side of the veths only port 15008 carried bytes.
        #expect(after("== 1.") == "  exit=0 status=200", "\(output)")
        #expect(after("== 1.", 2).contains("TCP ports with payload [15008]; plaintext HTTP seen: False"), "\(output)")
        // 2. denied client: reset (curl 56) and the destination proxy's 401 with both identities.
        #expect(after("== 2.").hasPrefix("  exit=56 status=000"), "\(output)")
        let denial = after("== 2.", 3)
        #expect(denial.contains("src.identity=\"spiffe://cluster.local/ns/client/sa/curl-deny\""), "\(denial)")
        #expect(denial.contains("dst.identity=\"spiffe://cluster.local/ns/apps/sa/httpbin\""), "\(denial)")
        #expect(denial.contains("HBONE 401"), "\(denial)")
        // 3. plaintext from outside the mesh is denied by the global STRICT policy.
        // The proxy resets the accepted connection: curl reports 56 (reset after connect) or,
        // when the reset beats its connect check, 7.
        #expect(after("== 3.").hasPrefix("  exit=56") || after("== 3.").hasPrefix("  exit=7 "), "\(output)")
        // 4. a TCP (non-HBONE) workload and a passthrough destination still work.
        #expect(after("== 4.") == "  tcp-echo answered: ping", "\(output)")
        #expect(after("== 4.", 2) == "  node server: exit=0 status=200", "\(output)")
        // 5. kubelet-style probes reach the app.
        #expect(after("== 5.") == "  exit=0 status=200", "\(output)")

        // 6. a policy change closes the live connection it denies (within the 1 s reload).
        #expect(after("== 6.").contains("the open connection was closed") || after("== 6.").contains("the open connection was reset"), "\(output)")
        #expect(after("== 6.", 2).contains("connection closed due to policy change: 1 to apps/httpbin"), "\(output)")
        #expect(after("== 6.", 3) == "  with the policy restored: exit=0 status=200", "\(output)")
        // 7. an independent HBONE client: this pod's IP → 200, another pod's IP → 400; a bad config is refused.
        #expect(after("== 7.") == "  authority 10.88.0.20:80 (this pod): 200 HTTP/1.0 200 OK", "\(output)")
        #expect(after("== 7.", 2) == "  authority 10.88.0.10:80 (another pod's IP): 400 ", "\(output)")
        #expect(after("== 7.", 4).contains("config rejected") && after("== 7.", 4).contains("workloadIp"), "\(output)")
        #expect(after("== 7.", 5) == "    curl-allow still: exit=0 status=200", "\(output)")
        // 8. observability.
        #expect(after("== 8.") == "  readiness: 200", "\(output)")
        #expect(after("== 8.", 2).contains("denials: 2"), "curl-deny's HBONE and tcp-echo's plaintext: \(output)")
        #expect(after("== 8.", 4) == "  config_dump: 5 workloads, 2 services, 3 policies, 3 pods served, certificates: curl-allow=Available, curl-deny=Available, httpbin=Available", "\(output)")
        let metrics = try String(contentsOf: directory.url.appendingPathComponent("metrics.txt"), encoding: .utf8)
        #expect(metrics.contains("istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"curl-allow\",source_canonical_service=\"unknown\",source_canonical_revision=\"unknown\",source_workload_namespace=\"client\",source_principal=\"spiffe://cluster.local/ns/client/sa/curl-allow\""))
        #expect(metrics.contains("destination_canonical_service=\"httpbin\",destination_canonical_revision=\"v1\""))
        #expect(metrics.contains("connection_security_policy=\"mutual_tls\""))

        #expect(after("== 8.", 6).hasPrefix("    NAMESPACE") && after("== 8.", 6).contains("POD NAME") && after("== 8.", 6).contains("PROTOCOL"), "zc workloads header: \(output)")
        #expect(output.contains("    apps        httpbin      10.88.0.20") || output.range(of: #"apps\s+httpbin\s+10\.88\.0\.20"#, options: .regularExpression) != nil, "\(output)")
        #expect(output.range(of: #"spiffe://cluster.local/ns/apps/sa/httpbin\s+Leaf\s+Available\s+true"#, options: .regularExpression) != nil, "zc certificates: \(output)")

        let access = try String(contentsOf: directory.url.appendingPathComponent("ztunnel.access.log"), encoding: .utf8)
        #expect(access.contains("src.workload=\"curl-allow\" src.namespace=\"client\" src.identity=\"spiffe://cluster.local/ns/client/sa/curl-allow\" dst.addr=10.96.0.20:8000 dst.service=\"httpbin.apps.svc.cluster.local\""))
        #expect(access.contains("error=\"plaintext connection denied by policy\""))
        // Everything was torn down.
        let namespaces = try ExternalTool.run(["ip", "netns", "list"]).standardOutput
        #expect(!namespaces.contains("hbob-"), "\(namespaces)")
    }
}
