import ArgumentParser
import Foundation

/// `ztunnel zc workload|service|certificates`: the tables `istioctl zc` prints, read from
/// a running proxy's `/config_dump`.
struct ZC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zc", abstract: "Print the proxy's view like `istioctl zc` (workload, service, certificates)."
    )

    enum View: String, ExpressibleByArgument, CaseIterable {
        case workload, workloads, service, services, certificate, certificates
    }

    @Argument(help: "workload, service or certificates")
    var view: View
    @Option(help: "The proxy's admin address.")
    var admin = "127.0.0.1:15000"

    func run() throws {
        let dump = try Self.fetch(self.admin, path: "/config_dump")
        guard let object = try JSONSerialization.jsonObject(with: dump) as? [String: Any] else {
            throw ValidationError("config_dump is not a JSON object")
        }
        let rows: [[String]]
        switch self.view {
        case .workload, .workloads:
            rows = [["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]]
                + (object["workloads"] as? [[String: Any]] ?? []).map { w in
                    [w["namespace"] as? String ?? "", w["name"] as? String ?? "", (w["workloadIps"] as? [String])?.first ?? "",
                     w["node"] as? String ?? "", "None", w["protocol"] as? String ?? ""]
                }.sorted { ($0[0], $0[1]) < ($1[0], $1[1]) }   // istioctl: by namespace, then name
        case .service, .services:
            rows = [["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"]]
                + (object["services"] as? [[String: Any]] ?? []).map { s in
                    let endpoints = (s["endpoints"] as? [String] ?? []).count
                    return [s["namespace"] as? String ?? "", s["name"] as? String ?? "",
                            ((s["vips"] as? [String])?.first ?? "").split(separator: "/").last.map(String.init) ?? "",
                            "None", "\(endpoints)/\(endpoints)"]
                }.sorted { ($0[0], $0[1]) < ($1[0], $1[1]) }
        case .certificate, .certificates:
            var table = [["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]]
            for certificate in object["certificates"] as? [[String: Any]] ?? [] {
                let identity = certificate["identity"] as? String ?? ""
                let state = certificate["state"] as? String ?? ""
                for (index, entry) in (certificate["certChain"] as? [[String: Any]] ?? []).enumerated() {
                    let notAfter = entry["expirationTime"] as? String ?? ""
                    let valid = ISO8601DateFormatter().date(from: notAfter).map { $0 > Date() } ?? false
                    table.append([identity, index == 0 ? "Leaf" : "CA", state, valid ? "true" : "false",
                                  entry["serialNumber"] as? String ?? "", notAfter, entry["validFrom"] as? String ?? ""])
                }
            }
            rows = table
        }
        let widths = rows.reduce(into: [Int](repeating: 0, count: rows[0].count)) { widths, row in
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        for row in rows {
            print(row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index] + 3, withPad: " ", startingAt: 0)
            }.joined())
        }
    }

    /// A plain HTTP/1.1 GET over TCP (the admin port is localhost-only and unencrypted).
    static func fetch(_ address: String, path: String) throws -> Data {
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else { throw ValidationError("--admin must be host:port") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &sin.sin_addr) == 1 else { throw ValidationError("--admin host must be an IPv4 address") }
        let connected = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw ValidationError("cannot reach the proxy's admin port at \(address)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        guard let split = response.range(of: Data("\r\n\r\n".utf8)) else { throw ValidationError("malformed admin response") }
        return response[split.upperBound...]
    }
}
