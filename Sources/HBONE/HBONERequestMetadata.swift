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

        /// The header value, empty fields omitted, in ztunnel's order.
        public var headerValue: String {
            var entries: [(String, String?)] = [
                ("k8s.cluster.name", self.clusterName),
                ("k8s.namespace.name", self.namespace),
            ]
            if let kind = self.workloadKind, Self.workloadKinds.contains(kind) {
                entries.append(("k8s.\(kind).name", self.workloadName))
            }
            entries += [
                ("service.name", self.serviceName), ("service.version", self.serviceVersion),
                ("cloud.region", self.region), ("cloud.availability_zone", self.zone),
            ]
            return entries.compactMap { key, value in
                guard let value, !value.isEmpty else { return nil }
                return "\(key)=\(value)"
            }.joined(separator: ",")
        }

        /// Parses a `baggage` value; unknown keys and properties (`;…`) are ignored.
        public init(headerValue: String) {
            self.init()
            for member in headerValue.split(separator: ",") {
                let keyValue = member.split(separator: ";", maxSplits: 1)[0]
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

        /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; rejects all-zero ids and other versions.
        public init?(headerValue: String) {
            let parts = headerValue.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 4, parts[0] == "00", parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
                parts.allSatisfy({ $0.allSatisfy { $0.isHexDigit && ($0.isNumber || $0.isLowercase) } }),
                let high = UInt64(parts[1].prefix(16), radix: 16), let low = UInt64(parts[1].suffix(16), radix: 16),
                let parent = UInt64(parts[2], radix: 16), let flags = UInt8(parts[3], radix: 16),
                high != 0 || low != 0, parent != 0
            else { return nil }
            self.init(traceID: (high, low), parentID: parent, flags: flags)
        }

        /// The header value.
        public var description: String {
            "00-\(hex(self.traceID.0, 16))\(hex(self.traceID.1, 16))-\(hex(self.parentID, 16))-\(hex(UInt64(self.flags), 2))"
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

private func hex(_ value: UInt64, _ width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
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
