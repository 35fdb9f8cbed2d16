#if canImport(Glibc)
internal import Glibc
#endif

/// An IPv4 or IPv6 address, stored in network byte order.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// Four bytes.
    case v4(UInt8, UInt8, UInt8, UInt8)
    /// Sixteen bytes.
    case v6([UInt8])

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (no brackets, no zone).
    public init?(_ text: String) {
        // Plain byte buffers rather than in_addr/in6_addr: those structs are also declared
        // by NIO's C shims, and which module "defines" them differs between builds.
        var v4 = [UInt8](repeating: 0, count: 4)
        if v4.withUnsafeMutableBytes({ inet_pton(AF_INET, text, $0.baseAddress) }) == 1 {
            self = .v4(v4[0], v4[1], v4[2], v4[3])
            return
        }
        var v6 = [UInt8](repeating: 0, count: 16)
        if v6.withUnsafeMutableBytes({ inet_pton(AF_INET6, text, $0.baseAddress) }) == 1 {
            self = .v6(v6)
            return
        }
        return nil
    }

    /// The IPv4 address behind an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291
    /// §2.5.5.2), which a dual-stack socket reports for IPv4 peers; other addresses unchanged.
    public var unmapped: IPAddress {
        guard case .v6(let bytes) = self, bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }),
            bytes[10] == 0xff, bytes[11] == 0xff
        else { return self }
        return .v4(bytes[12], bytes[13], bytes[14], bytes[15])
    }

    /// The address bytes in network order (4 or 16).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a, let b, let c, let d): return [a, b, c, d]
        case .v6(let bytes): return bytes
        }
    }

    /// Whether this is an IPv6 address.
    public var isIPv6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// Canonical text (`inet_ntop`).
    public var description: String {
        switch self {
        case .v4(let a, let b, let c, let d):
            return "\(a).\(b).\(c).\(d)"
        case .v6(let bytes):
            var address = [UInt8](repeating: 0, count: 16)
            address.replaceSubrange(0..<min(16, bytes.count), with: bytes.prefix(16))
            var buffer = [CChar](repeating: 0, count: 46)  // INET6_ADDRSTRLEN
            let written = address.withUnsafeBytes { source in
                buffer.withUnsafeMutableBufferPointer { inet_ntop(AF_INET6, source.baseAddress, $0.baseAddress, socklen_t($0.count)) }
            }
            guard written != nil else { return "::" }
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// An `ip:port` endpoint as HBONE writes it in `:authority` and `forwarded`:
/// IPv6 addresses in brackets (`[fd00::1]:8080`), RFC 3986 §3.2.2.
public struct HBONEAddress: Hashable, Sendable, CustomStringConvertible {
    /// The IP address.
    public var ip: IPAddress
    /// The TCP port.
    public var port: UInt16

    /// Creates an address.
    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parses `a.b.c.d:port` or `[v6]:port`. Returns `nil` for anything else (host names,
    /// missing or out-of-range ports, unbracketed IPv6).
    public init?(authority: String) {
        let host: Substring
        let portText: Substring
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let rest = authority[authority.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
            guard let ip = IPAddress(String(host)), ip.isIPv6 else { return nil }
            guard let port = HBONEAddress.parsePort(portText) else { return nil }
            self.init(ip: ip, port: port)
        } else {
            guard let colon = authority.lastIndex(of: ":"), authority.firstIndex(of: ":") == colon else { return nil }
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
            guard let ip = IPAddress(String(host)), !ip.isIPv6 else { return nil }
            guard let port = HBONEAddress.parsePort(portText) else { return nil }
            self.init(ip: ip, port: port)
        }
    }

    private static func parsePort(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        guard let value = UInt16(text), value != 0 else { return nil }
        return value
    }

    /// `ip:port`, IPv6 in brackets.
    public var description: String {
        self.ip.isIPv6 ? "[\(self.ip)]:\(self.port)" : "\(self.ip):\(self.port)"
    }
}
