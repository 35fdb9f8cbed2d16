/// The metadata an HBONE `CONNECT` carries besides its target, as ztunnel builds and
/// reads it (`src/proxy/outbound.rs` `create_hbone_request`, `src/baggage.rs`,
/// `src/proxy.rs` `TraceParent`).
///
/// Wire form (HTTP/2 request headers, lower-case names):
/// - `forwarded: for="<client ip:port>"` with `;host=<service hostname>` when a service
///   was targeted (RFC 7239 §4; IPv6 `for` values are quoted and bracketed).
/// - `baggage: k8s.cluster.name=…,k8s.namespace.name=…,k8s.<kind>.name=…,service.name=…,
///   service.version=…,cloud.region=…,cloud.availability_zone=…` with empty fields omitted
///   (W3C Baggage).
/// - `traceparent: 00-<32 hex trace id>-<16 hex parent id>-00` (W3C Trace Context §3.2).
public struct HBONERequestMetadata: Hashable, Sendable {
    /// The original client address (`forwarded: for=`).
    public var forwardedFor: HBONEAddress?
    /// The service host name the client targeted (`forwarded: ;host=`).
    public var forwardedHost: String?
    /// Workload telemetry of the source.
    public var baggage: Baggage
    /// The trace context.
    public var traceParent: TraceParent?

    /// Creates metadata.
    public init(
        forwardedFor: HBONEAddress? = nil,
        forwardedHost: String? = nil,
        baggage: Baggage = Baggage(),
        traceParent: TraceParent? = nil
    ) {
        self.forwardedFor = forwardedFor
        self.forwardedHost = forwardedHost
        self.baggage = baggage
        self.traceParent = traceParent
    }

    /// The `forwarded` header value, or `nil` when there is nothing to forward.
    public var forwardedHeader: String? {
        guard let forwardedFor else { return nil }
        var value = "for=\"\(forwardedFor)\""
        if let forwardedHost, !forwardedHost.isEmpty { value += ";host=\(forwardedHost)" }
        return value
    }

    /// Parses a `forwarded` header: the first element's `for` and `host` parameters.
    public static func parseForwarded(_ value: String) -> (for: HBONEAddress?, host: String?) {
        let firstElement = value.split(separator: ",", maxSplits: 1).first ?? ""
        var forAddress: HBONEAddress?
        var host: String?
        for pair in firstElement.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: " \t") }
            guard parts.count == 2 else { continue }
            let unquoted = parts[1].hasPrefix("\"") && parts[1].hasSuffix("\"") && parts[1].count >= 2
                ? String(parts[1].dropFirst().dropLast()) : parts[1]
            switch parts[0].lowercased() {
            case "for": forAddress = HBONEAddress(authority: unquoted)
            case "host": host = unquoted
            default: continue
            }
        }
        return (forAddress, host)
    }

    /// Source workload telemetry carried in `baggage`.
    public struct Baggage: Hashable, Sendable {
        /// `k8s.cluster.name`.
        public var clusterName: String?
        /// `k8s.namespace.name`.
        public var namespace: String?
        /// Workload kind for the `k8s.<kind>.name` key: deployment, cronjob, pod or job.
        public var workloadKind: String?
        /// The workload name.
        public var workloadName: String?
        /// `service.name` (canonical service).
        public var serviceName: String?
        /// `service.version` (canonical revision).
        public var serviceVersion: String?
        /// `cloud.region`.
        public var region: String?
        /// `cloud.availability_zone`.
        public var zone: String?

        /// The workload kinds ztunnel emits.
        public static let workloadKinds = ["deployment", "cronjob", "pod", "job"]

        /// Creates baggage.
        public init(
            clusterName: String? = nil, namespace: String? = nil, workloadKind: String? = nil,
            workloadName: String? = nil, serviceName: String? = nil, serviceVersion: String? = nil,
            region: String? = nil, zone: String? = nil
        ) {
            self.clusterName = clusterName
            self.namespace = namespace
            self.workloadKind = workloadKind
            self.workloadName = workloadName
            self.serviceName = serviceName
            self.serviceVersion = serviceVersion
            self.region = region
            self.zone = zone
        }

        /// The header value, empty fields omitted, in ztunnel's order. Built on every
        /// CONNECT, so it appends into one string instead of building and joining pairs.
        public var headerValue: String {
            var value = ""
            func add(_ key: String, _ field: String?) {
                guard let field, !field.isEmpty else { return }
                if !value.isEmpty { value.append(",") }
                value.append(key)
                value.append("=")
                value.append(field)
            }
            add("k8s.cluster.name", self.clusterName)
            add("k8s.namespace.name", self.namespace)
            if let kind = self.workloadKind, Self.workloadKinds.contains(kind) {
                add("k8s.\(kind).name", self.workloadName)
            }
            add("service.name", self.serviceName)
            add("service.version", self.serviceVersion)
            add("cloud.region", self.region)
            add("cloud.availability_zone", self.zone)
            return value
        }

        /// Parses a `baggage` value; unknown keys and properties (`;…`) are ignored.
        public init(headerValue: String) {
            self.init()
            for member in headerValue.split(separator: ",") {
                // A member's properties follow `;` (W3C Baggage §3.3.1); a member may be
                // nothing but properties (`;p`), which has no key and is skipped below.
                let keyValue = member.prefix { $0 != ";" }
                let parts = keyValue.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: " \t") }
                guard parts.count == 2, !parts[1].isEmpty else { continue }
                let (key, value) = (parts[0], parts[1])
                switch key {
                case "k8s.cluster.name": self.clusterName = value
                case "k8s.namespace.name": self.namespace = value
                case "service.name": self.serviceName = value
                case "service.version": self.serviceVersion = value
                case "cloud.region": self.region = value
                case "cloud.availability_zone": self.zone = value
                default:
                    for kind in Self.workloadKinds where key == "k8s.\(kind).name" {
                        self.workloadKind = kind
                        self.workloadName = value
                    }
                }
            }
        }
    }

    /// A W3C trace context parent (`traceparent`, version 00).
    public struct TraceParent: Hashable, Sendable, CustomStringConvertible {
        /// The 128-bit trace id (not all zero).
        public var traceID: (UInt64, UInt64)
        /// The 64-bit parent id (not zero).
        public var parentID: UInt64
        /// Trace flags (ztunnel sends 00).
        public var flags: UInt8

        /// A random trace context, as ztunnel creates per application connection.
        public static func random() -> TraceParent {
            TraceParent(
                traceID: (UInt64.random(in: 1...UInt64.max), UInt64.random(in: 0...UInt64.max)),
                parentID: UInt64.random(in: 1...UInt64.max), flags: 0
            )
        }

        /// Creates a trace context.
        public init(traceID: (UInt64, UInt64), parentID: UInt64, flags: UInt8 = 0) {
            self.traceID = traceID
            self.parentID = parentID
            self.flags = flags
        }

        /// The length of a version-00 header value: `00-` + 32 + `-` + 16 + `-` + 2.
        private static let headerLength = 55

        /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (lower-case hex only, W3C Trace Context
        /// §3.2.2); rejects all-zero ids and other versions. Read from every inbound
        /// CONNECT, so it works on the UTF-8 bytes.
        public init?(headerValue: String) {
            var value = headerValue
            guard let parsed = value.withUTF8({ Self.parse($0) }) else { return nil }
            self = parsed
        }

        private static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> TraceParent? {
            guard bytes.count == Self.headerLength, bytes[0] == UInt8(ascii: "0"), bytes[1] == UInt8(ascii: "0"),
                bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-"),
                let high = parseHex(bytes, from: 3, count: 16), let low = parseHex(bytes, from: 19, count: 16),
                let parent = parseHex(bytes, from: 36, count: 16), let flags = parseHex(bytes, from: 53, count: 2),
                high != 0 || low != 0, parent != 0
            else { return nil }
            return TraceParent(traceID: (high, low), parentID: parent, flags: UInt8(flags))
        }

        /// The header value.
        public var description: String {
            String(unsafeUninitializedCapacity: Self.headerLength) { bytes in
                bytes[0] = UInt8(ascii: "0")
                bytes[1] = UInt8(ascii: "0")
                bytes[2] = UInt8(ascii: "-")
                writeHex(self.traceID.0, into: bytes, at: 3, count: 16)
                writeHex(self.traceID.1, into: bytes, at: 19, count: 16)
                bytes[35] = UInt8(ascii: "-")
                writeHex(self.parentID, into: bytes, at: 36, count: 16)
                bytes[52] = UInt8(ascii: "-")
                writeHex(UInt64(self.flags), into: bytes, at: 53, count: 2)
                return Self.headerLength
            }
        }

        public static func == (lhs: TraceParent, rhs: TraceParent) -> Bool {
            lhs.traceID == rhs.traceID && lhs.parentID == rhs.parentID && lhs.flags == rhs.flags
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(self.traceID.0)
            hasher.combine(self.traceID.1)
            hasher.combine(self.parentID)
            hasher.combine(self.flags)
        }
    }
}

/// `count` lower-case hex digits of `value`, most significant first, at `offset`.
private func writeHex(_ value: UInt64, into bytes: UnsafeMutableBufferPointer<UInt8>, at offset: Int, count: Int) {
    for index in 0..<count {
        let nibble = UInt8(truncatingIfNeeded: value >> (4 * UInt64(count - 1 - index))) & 0x0F
        bytes[offset + index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

/// The value of `count` lower-case hex digits at `offset`, or `nil` if any byte is not one.
private func parseHex(_ bytes: UnsafeBufferPointer<UInt8>, from offset: Int, count: Int) -> UInt64? {
    var value: UInt64 = 0
    for byte in bytes[offset..<(offset + count)] {
        let nibble: UInt8
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = byte - UInt8(ascii: "a") + 10
        default: return nil
        }
        value = value << 4 | UInt64(nibble)
    }
    return value
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var scalars = Substring(self)
        while let first = scalars.first, set.contains(first) { scalars = scalars.dropFirst() }
        while let last = scalars.last, set.contains(last) { scalars = scalars.dropLast() }
        return String(scalars)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}
