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
/// directions (ztunnel "un-flips" them for the log); `duration` is `"<ms>ms"`. Written to
/// stdout, as text or, with ztunnel's `LOG_FORMAT=json`, one JSON object per line:
///
///     {"level":"info","time":"…","scope":"access","message":"connection complete","src.addr":"…",…,"bytes_sent":79,…}
final class AccessLog: Sendable {
    /// ztunnel's `LOG_FORMAT`.
    enum Format: String, Sendable, CaseIterable {
        case text, json
    }

    /// A field's value. In text, strings are quoted and addresses and numbers are not
    /// (as ztunnel prints them); JSON keeps numbers as numbers.
    enum Value {
        case string(String)
        case address(String)
        case number(Int)
    }

    private let lock = Mutex<Void>(())
    let store: StoreBox
    let trustDomain: String
    let format: Format

    init(store: StoreBox, trustDomain: String, format: Format = .text) {
        self.store = store
        self.trustDomain = trustDomain
        self.format = format
    }

    func inbound(_ record: HBONETunnelRecord, destination: Workload) {
        let request = record.request
        let sourceWorkload = request?.peerAddress.flatMap { self.store.current.workload(at: $0.ip.unmapped) }
        var fields: [(String, Value?)] = [
            ("src.addr", request?.peerAddress.map { .address("\($0)") }),
            ("src.workload", Self.text(sourceWorkload?.name)),
            ("src.namespace", Self.text(sourceWorkload?.namespace ?? request?.peerIdentity.namespace)),
            ("src.identity", Self.text(request?.peerIdentity.uri)),
            ("dst.addr", request?.localAddress.map { .address("\(HBONEAddress(ip: $0.ip.unmapped, port: $0.port))") }),
            ("dst.hbone_addr", request.map { .address("\($0.target)") }),
            ("dst.workload", Self.text(destination.name)),
            ("dst.namespace", Self.text(destination.namespace)),
            ("dst.identity", Self.text((try? InPodProxies.identity(of: destination, trustDomain: self.trustDomain))?.uri)),
            ("direction", Self.text("inbound")),
            ("bytes_sent", .number(record.bytes.received)),
            ("bytes_recv", .number(record.bytes.sent)),
            ("duration", Self.milliseconds(record.duration)),
        ]
        let failed = record.status.code != 200
        if failed { fields.append(("error", Self.text("HBONE \(record.status.code): \(record.reason ?? "")"))) }
        self.write(level: failed ? "error" : "info", fields)
    }

    func outbound(_ record: TransparentListener.Record, source: Workload, store: MeshStore) {
        let destination = store.workload(at: record.connection.originalDestination.ip.unmapped)
        let service = store.service(vip: record.connection.originalDestination.ip.unmapped, clientNamespace: source.namespace)
        var fields: [(String, Value?)] = [
            ("src.addr", record.connection.source.map { .address("\($0)") }),
            ("src.workload", Self.text(source.name)),
            ("src.namespace", Self.text(source.namespace)),
            ("src.identity", record.route == "tunnel" ? Self.text((try? InPodProxies.identity(of: source, trustDomain: self.trustDomain))?.uri) : nil),
            ("dst.addr", .address("\(record.connection.originalDestination)")),
            ("dst.service", Self.text(service?.hostname)),
            ("dst.workload", Self.text(destination?.name)),
            ("dst.namespace", Self.text(destination?.namespace ?? service?.namespace)),
            ("direction", Self.text("outbound")),
            ("bytes_sent", .number(record.bytes.sent)),
            ("bytes_recv", .number(record.bytes.received)),
            ("duration", Self.milliseconds(record.duration)),
        ]
        if let error = record.error { fields.append(("error", Self.text(error))) }
        self.write(level: record.error == nil ? "info" : "error", fields)
    }

    func plaintextInbound(_ record: TransparentListener.Record, destination: Workload) {
        var fields: [(String, Value?)] = [
            ("src.addr", record.connection.source.map { .address("\($0)") }),
            ("dst.addr", .address("\(record.connection.originalDestination)")),
            ("dst.workload", Self.text(destination.name)),
            ("dst.namespace", Self.text(destination.namespace)),
            ("direction", Self.text("inbound")),
            ("bytes_sent", .number(record.bytes.sent)),
            ("bytes_recv", .number(record.bytes.received)),
            ("duration", Self.milliseconds(record.duration)),
        ]
        if let error = record.error { fields.append(("error", Self.text(error))) }
        self.write(level: record.error == nil ? "info" : "error", fields)
    }

    func note(_ message: String) {
        self.write(level: "info", message: message, [])
    }

    private func write(level: String, message: String = "connection complete", _ fields: [(String, Value?)]) {
        let present = fields.compactMap { key, value in value.map { (key, $0) } }
        let time = Self.timestamp()
        switch self.format {
        case .text:
            let text = present.map { key, value in
                switch value {
                case .string(let string): return "\(key)=\(Self.quote(string))"
                case .address(let address): return "\(key)=\(address)"
                case .number(let number): return "\(key)=\(number)"
                }
            }.joined(separator: " ")
            self.line("\(time)\t\(level)\taccess\t\(message)\(text.isEmpty ? "" : "\t" + text)\n")
        case .json:
            var object = [("level", Value.string(level)), ("time", .string(time)), ("scope", .string("access")), ("message", .string(message))]
            object += present
            let members = object.map { key, value in
                switch value {
                case .string(let string), .address(let string): return "\(Self.json(key)):\(Self.json(string))"
                case .number(let number): return "\(Self.json(key)):\(number)"
                }
            }
            self.line("{" + members.joined(separator: ",") + "}\n")
        }
    }

    private func line(_ text: String) {
        self.lock.withLock { _ in FileHandle.standardOutput.write(Data(text.utf8)) }
    }

    /// A string field, left out when empty.
    static func text(_ value: String?) -> Value? {
        guard let value, !value.isEmpty else { return nil }
        return .string(value)
    }

    /// ztunnel prints durations in whole milliseconds: `duration="12ms"`.
    static func milliseconds(_ duration: Duration) -> Value {
        let (seconds, attoseconds) = duration.components
        return .string("\(seconds * 1000 + attoseconds / 1_000_000_000_000_000)ms")
    }

    static func quote(_ value: String) -> String {
        "\"" + escapeQuotes(value) + "\""
    }

    /// `\` and `"` backslash-escaped; the common case (neither present) returns the string as is.
    static func escapeQuotes(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") }) else { return value }
        var out = ""
        for scalar in value.unicodeScalars {
            if scalar == "\\" || scalar == "\"" { out.unicodeScalars.append("\\") }
            out.unicodeScalars.append(scalar)
        }
        return out
    }

    /// A JSON string literal (RFC 8259 §7).
    static func json(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// RFC 3339 in UTC with microseconds, as ztunnel prints it: `2026-11-26T16:25:19.123456Z`.
    /// Formatted by hand: a Foundation date formatter per record was a fifth of the proxy's
    /// CPU time at a few thousand connections per second.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        gmtime_r(&now.tv_sec, &parts)
        func padded(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return padded(Int(parts.tm_year) + 1900, 4) + "-" + padded(Int(parts.tm_mon) + 1, 2) + "-" + padded(Int(parts.tm_mday), 2)
            + "T" + padded(Int(parts.tm_hour), 2) + ":" + padded(Int(parts.tm_min), 2) + ":" + padded(Int(parts.tm_sec), 2)
            + "." + padded(now.tv_nsec / 1000, 6) + "Z"
    }
}
