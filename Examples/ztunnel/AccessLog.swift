import Foundation
import InternetAddress
import MeshIdentity
import HBONE
import MeshState
import Synchronization

/// ztunnel's access log: one line per finished connection, target `access`, message
/// `connection complete` (`info`, or `error` with an `error` field), fields in ztunnel's
/// order with absent values left out:
///
///     <RFC 3339 time>\tinfo\taccess\tconnection complete\tsrc.addr=… src.workload="…" …
///
/// `bytes_sent` counts the client → server direction and `bytes_recv` the reverse, for both
/// directions (ztunnel "un-flips" them for the log). Written to stdout.
final class AccessLog: Sendable {
    private let lock = Mutex<Void>(())
    let store: StoreBox
    let trustDomain: String

    init(store: StoreBox, trustDomain: String) {
        self.store = store
        self.trustDomain = trustDomain
    }

    func inbound(_ record: HBONETunnelRecord, destination: Workload) {
        let request = record.request
        let sourceWorkload = request?.peerAddress.flatMap { self.store.current.workload(at: $0.ip.unmapped) }
        var fields: [(String, String?)] = [
            ("src.addr", request?.peerAddress.map { "\($0)" }),
            ("src.workload", Self.quoted(sourceWorkload?.name)),
            ("src.namespace", Self.quoted(sourceWorkload?.namespace ?? request?.peerIdentity.namespace)),
            ("src.identity", Self.quoted(request?.peerIdentity.uri)),
            ("dst.addr", request?.localAddress.map { "\(HBONEAddress(ip: $0.ip.unmapped, port: $0.port))" }),
            ("dst.hbone_addr", request.map { "\($0.target)" }),
            ("dst.workload", Self.quoted(destination.name)),
            ("dst.namespace", Self.quoted(destination.namespace)),
            ("dst.identity", Self.quoted((try? InPodProxies.identity(of: destination, trustDomain: self.trustDomain))?.uri)),
            ("direction", Self.quoted("inbound")),
            ("bytes_sent", "\(record.bytes.received)"),
            ("bytes_recv", "\(record.bytes.sent)"),
        ]
        let failed = record.status.code != 200
        if failed { fields.append(("error", Self.quoted("HBONE \(record.status.code): \(record.reason ?? "")"))) }
        self.write(level: failed ? "error" : "info", fields)
    }

    func outbound(_ record: TransparentListener.Record, source: Workload, store: MeshStore) {
        let destination = store.workload(at: record.connection.originalDestination.ip.unmapped)
        let service = store.service(vip: record.connection.originalDestination.ip.unmapped, clientNamespace: source.namespace)
        var fields: [(String, String?)] = [
            ("src.addr", record.connection.source.map { "\($0)" }),
            ("src.workload", Self.quoted(source.name)),
            ("src.namespace", Self.quoted(source.namespace)),
            ("src.identity", record.route == "tunnel" ? Self.quoted((try? InPodProxies.identity(of: source, trustDomain: self.trustDomain))?.uri) : nil),
            ("dst.addr", "\(record.connection.originalDestination)"),
            ("dst.service", Self.quoted(service?.hostname)),
            ("dst.workload", Self.quoted(destination?.name)),
            ("dst.namespace", Self.quoted(destination?.namespace ?? service?.namespace)),
            ("direction", Self.quoted("outbound")),
            ("bytes_sent", "\(record.bytes.sent)"),
            ("bytes_recv", "\(record.bytes.received)"),
        ]
        if let error = record.error { fields.append(("error", Self.quoted(error))) }
        self.write(level: record.error == nil ? "info" : "error", fields)
    }

    func plaintextInbound(_ record: TransparentListener.Record, destination: Workload) {
        var fields: [(String, String?)] = [
            ("src.addr", record.connection.source.map { "\($0)" }),
            ("dst.addr", "\(record.connection.originalDestination)"),
            ("dst.workload", Self.quoted(destination.name)),
            ("dst.namespace", Self.quoted(destination.namespace)),
            ("direction", Self.quoted("inbound")),
            ("bytes_sent", "\(record.bytes.sent)"),
            ("bytes_recv", "\(record.bytes.received)"),
        ]
        if let error = record.error { fields.append(("error", Self.quoted(error))) }
        self.write(level: record.error == nil ? "info" : "error", fields)
    }

    func note(_ message: String) {
        self.line("\(Self.timestamp())\tinfo\taccess\t\(message)\n")
    }

    private func write(level: String, _ fields: [(String, String?)]) {
        let text = fields.compactMap { key, value in value.map { "\(key)=\($0)" } }.joined(separator: " ")
        self.line("\(Self.timestamp())\t\(level)\taccess\tconnection complete\t\(text)\n")
    }

    private func line(_ text: String) {
        self.lock.withLock { _ in FileHandle.standardOutput.write(Data(text.utf8)) }
    }

    static func quoted(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date())
    }
}
