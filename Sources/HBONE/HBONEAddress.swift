#if canImport(Glibc)
internal import Glibc
#endif
public import InternetAddress

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
