internal import CMNL

#if canImport(Glibc)
internal import Glibc
#endif

/// An IPv4 or IPv6 address in network byte order, as netlink attributes carry it.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// Four bytes.
    case v4([UInt8])
    /// Sixteen bytes.
    case v6([UInt8])

    /// Parses the textual form (`inet_pton`): dotted quad or RFC 5952 IPv6, no brackets,
    /// no prefix length. Returns `nil` for anything else.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(withUnsafeBytes(of: v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: v6) { Array($0) })
            return
        }
        return nil
    }

    /// Wraps raw bytes: 4 for IPv4, 16 for IPv6.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: self = .v4(bytes)
        case 16: self = .v6(bytes)
        default: return nil
        }
    }

    /// The address bytes in network order.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let bytes), .v6(let bytes): bytes
        }
    }

    /// `true` for IPv6.
    public var isIPv6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// `AF_INET` or `AF_INET6`.
    public var addressFamily: UInt8 { UInt8(self.isIPv6 ? AF_INET6 : AF_INET) }

    /// The canonical textual form (`inet_ntop`).
    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family = self.isIPv6 ? AF_INET6 : AF_INET
        let ok = self.bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
