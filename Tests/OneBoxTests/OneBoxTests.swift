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

    /// How long the churn phase runs: `ONEBOX_CHURN_SECONDS` (`scripts/test`, and so CI, sets
    /// 600, the ten minutes the issue asks for), else a one-minute run for a quick local test.
    static let churnSeconds = Int(ProcessInfo.processInfo.environment["ONEBOX_CHURN_SECONDS"] ?? "") ?? 60

    @Test("HBONE between pods with no plaintext on the wire, ALLOW by principal and 401 for the other, STRICT for plaintext, TCP and passthrough destinations, probes, restarts, pod lifecycle, CA outage, churn without leaks")
    func scenarios() async throws {
        let directory = try TemporaryDirectory(prefix: "hbone-onebox")
        let run = try await ExternalTool.run(
                [
                    "env", "ONEBOX_BIN=\(Self.binaries)", "ONEBOX_DIR=\(directory.url.path)", "ONEBOX_PODS=3",
                    "ONEBOX_CHURN_SECONDS=\(Self.churnSeconds)", "bash", Self.root.appendingPathComponent("Examples/onebox/onebox.sh").path,
                ],
                timeout: .seconds(360 + Self.churnSeconds)
            )
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
        #expect(["  exit=56 ", "  exit=55 ", "  exit=7 "].contains { after("== 3.").hasPrefix($0) }, "\(output)")
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
        // 5 checked-in workloads + 3 extra client pods + 16 churn pods + the newcomer; 3 + 3 pods served.
        #expect(after("== 8.", 4) == "  config_dump: 25 workloads, 2 services, 3 policies, 6 pods served, certificates: curl-allow=Available, curl-deny=Available, httpbin=Available", "\(output)")
        let metrics = try String(contentsOf: directory.url.appendingPathComponent("metrics.txt"), encoding: .utf8)
        #expect(metrics.contains("istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"curl-allow\",source_canonical_service=\"unknown\",source_canonical_revision=\"unknown\",source_workload_namespace=\"client\",source_principal=\"spiffe://cluster.local/ns/client/sa/curl-allow\""))
        #expect(metrics.contains("destination_canonical_service=\"httpbin\",destination_canonical_revision=\"v1\""))
        #expect(metrics.contains("connection_security_policy=\"mutual_tls\""))

        #expect(after("== 8.", 6).hasPrefix("    NAMESPACE") && after("== 8.", 6).contains("POD NAME") && after("== 8.", 6).contains("PROTOCOL"), "zc workloads header: \(output)")
        #expect(output.contains("    apps        httpbin      10.88.0.20") || output.range(of: #"apps\s+httpbin\s+10\.88\.0\.20"#, options: .regularExpression) != nil, "\(output)")
        #expect(output.range(of: #"spiffe://cluster.local/ns/apps/sa/httpbin\s+Leaf\s+Available\s+true"#, options: .regularExpression) != nil, "zc certificates: \(output)")

        // 9. ztunnel restarts: refused while down, back with every pod, rules untouched, JSON log.
        #expect(after("== 9.").hasPrefix("  while it is down: curl-allow exit=7 "), "\(output)")
        #expect(after("== 9.", 2) == "  back: readiness 200, pods=6; curl-allow exit=0 status=200", "\(output)")
        #expect(after("== 9.", 3).hasPrefix("  rules after the restart: identical (curl-allow:16/4 curl-deny:16/4 httpbin:16/4 tcp-echo:0/3 client-1:16/4"), "\(output)")
        #expect(after("== 9.", 4).contains("JSON access log:") && after("== 9.", 4).contains("src.identity=spiffe://cluster.local/ns/client/sa/curl-allow"), "\(output)")
        #expect(after("== 9.", 4).range(of: #"bytes_sent=79, bytes_recv=\d+, duration=\d+ms"#, options: .regularExpression) != nil, "\(output)")
        #expect(after("== 9.", 4).hasSuffix("its RFC 3339 time is recent"), "\(output)")
        // 10. a vanished netns and an agent restart: readiness falls and returns, traffic flows, rules identical.
        #expect(after("== 10.") == "  agent down: ztunnel readiness 503; curl-allow exit=0 status=200   (traffic keeps flowing)", "\(output)")
        #expect(after("== 10.", 2) == "  agent back: snapshot replayed, readiness 200", "\(output)")
        #expect(after("== 10.", 3).contains("namespaceNotFound") && after("== 10.", 3).contains("re-enrollment failed"), "\(output)")
        #expect(after("== 10.", 4) == "  rules of the other pods and the node after the restart: identical", "\(output)")
        #expect(after("== 10.", 5) == "  churn-a deleted from the API: proxy stopped 1; agent and ztunnel alive: yes", "\(output)")
        // 11. a pod's life: rules in, rules out on opt-out (plaintext then denied by STRICT), back, deleted.
        #expect(after("== 11.") == "  created: in-pod rules 16, proxy started 1, churn-b -> VIP exit=0 status=200", "\(output)")
        #expect(after("== 11.", 2) == "  labelled istio.io/dataplane-mode=none: in-pod rules 0, ip rules 3, proxy stopped 1", "\(output)")
        // A reset shows as curl 56 (while reading), 55 (while still sending) or 7 (before its connect check).
        #expect(["56", "55", "7"].contains { after("== 11.", 3).contains("plaintext now: exit=\($0) ") }, "\(output)")
        #expect(after("== 11.", 4) == "  label removed: re-enrolled (proxy started 2), probe-set entries 1", "\(output)")
        #expect(after("== 11.", 5) == "  deleted: proxy stopped 2, probe-set entries 0, enrollment record 0, netns gone", "\(output)")
        // 12. CA outage: cached certificates keep serving, a new identity fails until the CA is back.
        #expect(after("== 12.").hasPrefix("  CA down: curl-allow exit=0 status=200"), "\(output)")
        // Reset at once by the local proxy (no certificate): curl 56, 55 or 7 as in scenario 11.
        #expect(["56", "55", "7"].contains { after("== 12.", 2).hasPrefix("  newcomer (a new identity) -> VIP: exit=\($0) status=000; its certificate: Unavailable") }, "\(output)")
        #expect(after("== 12.", 3).contains("unreachable"), "\(output)")
        #expect(after("== 12.", 4) == "  CA back: the newcomer's certificate is Available (retried with backoff); newcomer -> VIP: exit=0 status=200", "\(output)")
        // 13. a pod the config does not know: NACK, ADD fails closed; the config adds it and the retry enrolls it.
        #expect(after("== 13.").hasPrefix("  istio-cni ADD failed: code 999:") && after("== 13.").hasSuffix("workload client/stranger is not in the mesh config"), "\(output)")
        #expect(after("== 13.", 2) == "  ztunnel and agent alive: yes; curl-allow exit=0 status=200", "\(output)")
        #expect(after("== 13.", 3).hasPrefix("  stranger added to the config: the agent's retry enrolled it, proxy started 1; stranger -> VIP exit=56"), "\(output)")
        // Churn: no fd growth; RSS bounded and flat after warm-up. Requests: each failure is
        // listed on stderr; none failed in the runs so far, one run had 3 of 375 fail, so up to
        // 1 % is tolerated rather than making CI flaky, and the note reports the numbers.
        let churn = after("== churn").split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }   // pods, requests, failed
        try #require(churn.count == 3 && after("== churn").hasSuffix(" failed"), "\(output)")
        #expect(churn[2] * 100 <= churn[1], "churn: \(after("== churn"))\n\(run.standardError)")
        func numbers(_ line: String) -> [Int] { line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) } }
        let usage = numbers(after("== churn", 2))   // ztunnel: fds before, after, RSS before, after
        try #require(usage.count == 4 && after("== churn", 2).hasPrefix("  ztunnel: fds"), "\(output)")
        #expect(usage[1] <= usage[0] + 2, "ztunnel fds grew: \(after("== churn", 2))")
        #expect(usage[3] - usage[2] < 12 * 1024, "ztunnel RSS grew by more than 12 MiB: \(after("== churn", 2))")
        let agent = numbers(after("== churn", 3))
        try #require(agent.count == 4 && after("== churn", 3).hasPrefix("  agent:"), "\(output)")
        #expect(agent[1] <= agent[0], "agent fds grew: \(after("== churn", 3))")
        #expect(agent[3] - agent[2] < 4 * 1024, "agent RSS grew by more than 4 MiB: \(after("== churn", 3))")
        let samples = after("== churn", 4).split(separator: ":").last.map { $0.split(separator: " ").compactMap { Int($0) } } ?? []
        if samples.count >= 4 {
            // After the first minutes the allocator has what it needs: no trend over the rest.
            #expect(samples.last! - samples[1] < 4 * 1024, "ztunnel RSS keeps growing: \(samples)")
        }
        #expect(after("== churn", 5) == "  pods served now: 6, churn namespaces left: 0", "\(output)")

        let access = try String(contentsOf: directory.url.appendingPathComponent("ztunnel.access.log"), encoding: .utf8)
        #expect(access.contains("src.workload=\"curl-allow\" src.namespace=\"client\" src.identity=\"spiffe://cluster.local/ns/client/sa/curl-allow\" dst.addr=10.96.0.20:8000 dst.service=\"httpbin.apps.svc.cluster.local\""))
        #expect(access.contains("error=\"plaintext connection denied by policy\""))
        // Everything was torn down.
        let namespaces = try await ExternalTool.run(["ip", "netns", "list"]).standardOutput
        #expect(!namespaces.contains("hbob-"), "\(namespaces)")
    }
}
