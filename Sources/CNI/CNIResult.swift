/// A CNI ADD result in the 1.x shape (SPEC 1.1 §"Success"), convertible from and to every
/// older format: 0.1.0/0.2.0 (`ip4`/`ip6` objects) and 0.3.x/0.4.0 (`ips` with a
/// `version` field). "Chained plugins … parse prevResult in the config's version,
/// convert to 1.x, print in the request `cniVersion`."
public struct CNIResult: Hashable, Sendable {
    /// `interfaces[]`.
    public struct Interface: Hashable, Sendable, Codable {
        public var name: String
        public var mac: String?
        public var mtu: Int?
        public var sandbox: String?
        public var socketPath: String?
        public var pciID: String?

        public init(name: String, mac: String? = nil, sandbox: String? = nil) {
            self.name = name
            self.mac = mac
            self.sandbox = sandbox
        }
    }

    /// `ips[]`: an address in CIDR notation, its gateway and the index into `interfaces`.
    public struct IPConfig: Hashable, Sendable, Codable {
        public var address: String
        public var gateway: String?
        public var interface: Int?

        public init(address: String, gateway: String? = nil, interface: Int? = nil) {
            self.address = address
            self.gateway = gateway
            self.interface = interface
        }

        /// `true` when the address is IPv6.
        public var isIPv6: Bool { self.address.contains(":") }
        /// The address without its prefix length.
        public var ip: String { String(self.address.prefix { $0 != "/" }) }
        /// The prefix length, when given.
        public var prefixLength: Int? { self.address.split(separator: "/").dropFirst().first.flatMap { Int($0) } }
    }

    /// `routes[]`.
    public struct Route: Hashable, Sendable, Codable {
        public var dst: String
        public var gw: String?
        public var mtu: Int?
        public var advmss: Int?
        public var priority: Int?
        public var table: Int?
        public var scope: Int?

        public init(dst: String, gw: String? = nil) {
            self.dst = dst
            self.gw = gw
        }
    }

    /// `dns`.
    public struct DNS: Hashable, Sendable, Codable {
        public var nameservers: [String]?
        public var domain: String?
        public var search: [String]?
        public var options: [String]?

        public init() {}
    }

    /// The version the result was decoded from or will be printed at.
    public var cniVersion: String
    public var interfaces: [Interface]?
    public var ips: [IPConfig]?
    public var routes: [Route]?
    public var dns: DNS?

    /// An empty result at `version` (what a chained plugin prints without `prevResult`).
    public init(cniVersion: String) {
        self.cniVersion = cniVersion
    }

    // MARK: Decoding any version

    /// Decodes `json`, a result in the format of its own `cniVersion` (or of `version` when
    /// the object carries none), into the 1.x shape.
    ///
    /// - Throws: ``CNIError/Code/incompatibleVersion`` for an unknown version,
    ///   ``CNIError/Code/decodingFailure`` for a malformed result.
    public init(decoding json: JSONValue, version defaultVersion: String) throws(CNIError) {
        guard case .object = json else { throw CNIError(.decodingFailure, "prevResult is not a JSON object") }
        let versionText = json["cniVersion"]?.stringValue ?? defaultVersion
        guard let version = CNIVersion(versionText), CNIVersion.all.contains(version) else {
            throw CNIError(.incompatibleVersion, "unsupported result cniVersion \"\(versionText)\"")
        }
        do {
            if version < .v0_3_0 {
                let legacy = try json.decode(Legacy.self)
                self.init(cniVersion: versionText)
                var ips: [IPConfig] = []
                var routes: [Route] = []
                for family in [legacy.ip4, legacy.ip6].compactMap({ $0 }) {
                    ips.append(IPConfig(address: family.ip, gateway: family.gateway))
                    routes += family.routes ?? []
                }
                self.ips = ips
                self.routes = routes
                self.dns = legacy.dns
            } else {
                let current = try json.decode(Current.self)
                self.init(cniVersion: versionText)
                self.interfaces = current.interfaces
                self.ips = current.ips?.map { IPConfig(address: $0.address, gateway: $0.gateway, interface: $0.interface) }
                self.routes = current.routes
                self.dns = current.dns
                if version < .v1_0_0, let ips = current.ips {
                    for ip in ips where ip.version != nil && ip.version != (ip.address.contains(":") ? "6" : "4") {
                        throw CNIError(.decodingFailure, "ips entry \(ip.address) has version \(ip.version!)")
                    }
                }
            }
        } catch let error as CNIError {
            throw error
        } catch {
            throw CNIError(.decodingFailure, "malformed prevResult at cniVersion \(versionText)", details: "\(error)")
        }
        for ip in self.ips ?? [] where ip.prefixLength == nil || !ip.address.contains("/") {
            throw CNIError(.decodingFailure, "ips address \"\(ip.address)\" is not in CIDR notation")
        }
    }

    // MARK: Encoding at a version

    /// The result printed at `version` (converted down for 0.x).
    public func json(version: String) throws(CNIError) -> JSONValue {
        guard let target = CNIVersion(version), CNIVersion.all.contains(target) else {
            throw CNIError(.incompatibleVersion, "cannot print a result at cniVersion \"\(version)\"")
        }
        do {
            if target < .v0_3_0 {
                let v4 = self.ips?.first { !$0.isIPv6 }
                let v6 = self.ips?.first { $0.isIPv6 }
                var legacy = Legacy(cniVersion: version)
                legacy.ip4 = v4.map { Legacy.Family(ip: $0.address, gateway: $0.gateway, routes: self.routes?.filter { !$0.dst.contains(":") }) }
                legacy.ip6 = v6.map { Legacy.Family(ip: $0.address, gateway: $0.gateway, routes: self.routes?.filter { $0.dst.contains(":") }) }
                legacy.dns = self.dns
                return try JSONValue(encoding: legacy)
            }
            var current = Current(cniVersion: version)
            current.interfaces = self.interfaces
            current.ips = self.ips?.map {
                Current.IP(version: target < .v1_0_0 ? ($0.isIPv6 ? "6" : "4") : nil, address: $0.address, gateway: $0.gateway, interface: $0.interface)
            }
            current.routes = self.routes
            current.dns = self.dns
            return try JSONValue(encoding: current)
        } catch {
            throw CNIError(.internal, "encoding the result failed", details: "\(error)")
        }
    }

    // MARK: Wire shapes

    /// 0.3.0 … 1.1.0.
    private struct Current: Codable {
        struct IP: Codable {
            var version: String?
            var address: String
            var gateway: String?
            var interface: Int?
        }

        /// Optional when reading: a `prevResult` may leave it out and take the
        /// configuration's (Go's `libcni` types have it `omitempty`).
        var cniVersion: String?
        var interfaces: [Interface]?
        var ips: [IP]?
        var routes: [Route]?
        var dns: DNS?

        init(cniVersion: String) { self.cniVersion = cniVersion }
    }

    /// 0.1.0 and 0.2.0.
    private struct Legacy: Codable {
        struct Family: Codable {
            var ip: String
            var gateway: String?
            var routes: [Route]?
        }

        var cniVersion: String?
        var ip4: Family?
        var ip6: Family?
        var dns: DNS?

        init(cniVersion: String) { self.cniVersion = cniVersion }
    }
}
