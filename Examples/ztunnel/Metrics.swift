import Foundation
import MeshIdentity
import MeshState
import Synchronization

/// ztunnel's TCP metrics (`src/proxy/metrics.rs`), Prometheus text format on 15020:
/// `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
/// `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`,
/// `istio_tcp_connections_failed_total`, each with Istio's traffic labels in ztunnel's
/// order; a missing value is `unknown`. Received bytes count the client → server direction
/// and sent bytes the reverse, for both reporters.
final class Metrics: Sendable {
    /// The labels of one series.
    struct Labels: Hashable {
        var reporter: String
        var source: Workload?
        var sourcePrincipal: String?
        var destination: Workload?
        var destinationService: Service?
        var destinationPrincipal: String?
        var responseFlags = "-"
        var mutualTLS: Bool

        var rendered: String {
            func value(_ text: String?) -> String {
                guard let text, !text.isEmpty else { return "unknown" }
                return AccessLog.escapeQuotes(text)
            }
            let pairs: [(String, String?)] = [
                ("reporter", self.reporter),
                ("source_workload", self.source.map { $0.workloadName.isEmpty ? $0.name : $0.workloadName }),
                ("source_canonical_service", self.source?.canonicalName),
                ("source_canonical_revision", self.source?.canonicalRevision),
                ("source_workload_namespace", self.source?.namespace),
                ("source_principal", self.sourcePrincipal),
                ("source_app", self.source?.canonicalName),
                ("source_version", self.source?.canonicalRevision),
                ("source_cluster", self.source?.clusterID),
                ("destination_service", self.destinationService?.hostname),
                ("destination_service_namespace", self.destinationService?.namespace),
                ("destination_service_name", self.destinationService?.name),
                ("destination_workload", self.destination.map { $0.workloadName.isEmpty ? $0.name : $0.workloadName }),
                ("destination_canonical_service", self.destination?.canonicalName),
                ("destination_canonical_revision", self.destination?.canonicalRevision),
                ("destination_workload_namespace", self.destination?.namespace),
                ("destination_principal", self.destinationPrincipal),
                ("destination_app", self.destination?.canonicalName),
                ("destination_version", self.destination?.canonicalRevision),
                ("destination_cluster", self.destination?.clusterID),
                ("request_protocol", "tcp"),
                ("response_flags", self.responseFlags),
                ("connection_security_policy", self.mutualTLS ? "mutual_tls" : "unknown"),
            ]
            return pairs.map { "\($0.0)=\"\(value($0.1))\"" }.joined(separator: ",")
        }
    }

    private struct Counters {
        var opened = 0, closed = 0, failed = 0, received = 0, sent = 0
    }

    private let series = Mutex<[String: Counters]>([:])

    func opened(_ labels: Labels) {
        self.update(labels) { $0.opened += 1 }
    }

    /// A finished connection: `received` client → server bytes, `sent` server → client.
    func closed(_ labels: Labels, received: Int, sent: Int, failed: Bool) {
        self.update(labels) { counters in
            counters.closed += 1
            counters.received += received
            counters.sent += sent
            if failed { counters.failed += 1 }
        }
    }

    private func update(_ labels: Labels, _ change: (inout Counters) -> Void) {
        let key = labels.rendered
        self.series.withLock { series in change(&series[key, default: Counters()]) }
    }

    /// The exposition text.
    var text: String {
        let series = self.series.withLock { $0 }.sorted { $0.key < $1.key }
        var out = ""
        let families: [(String, String, (Counters) -> Int)] = [
            ("istio_tcp_connections_opened_total", "The total number of TCP connections opened", { $0.opened }),
            ("istio_tcp_connections_closed_total", "The total number of TCP connections closed", { $0.closed }),
            ("istio_tcp_received_bytes_total", "The size of total bytes received during request in case of a TCP connection", { $0.received }),
            ("istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of a TCP connection", { $0.sent }),
            ("istio_tcp_connections_failed_total", "The total number of TCP connections that failed to establish", { $0.failed }),
        ]
        for (name, help, value) in families {
            out += "# HELP \(name) \(help).\n# TYPE \(name) counter\n"
            for (labels, counters) in series { out += "\(name){\(labels)} \(value(counters))\n" }
        }
        return out
    }
}
