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
        // IPv4 into a stack word; an array only for IPv6, which keeps one.
        var v4: UInt32 = 0
        if withUnsafeMutableBytes(of: &v4, { inet_pton(AF_INET, text, $0.baseAddress) }) == 1 {
            self = withUnsafeBytes(of: v4) { .v4($0[0], $0[1], $0[2], $0[3]) }
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

    /// Wraps raw bytes in network order: 4 for IPv4, 16 for IPv6.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: self = .v4(bytes[0], bytes[1], bytes[2], bytes[3])
        case 16: self = .v6(bytes)
        default: return nil
        }
    }

    /// `AF_INET` or `AF_INET6`, as netlink and socket addresses carry it.
    public var addressFamily: UInt8 { UInt8(self.isIPv6 ? AF_INET6 : AF_INET) }

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

/// An address block (`10.0.0.0/8`, `fd00::/64`, a bare address as /32 or /128).
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int

    /// Parses CIDR notation or a bare address; `nil` when malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        let bits = address.bytes.count * 8
        let length = parts.count == 2 ? Int(parts[1]) : bits
        guard let length, (0...bits).contains(length) else { return nil }
        self.address = address
        self.prefixLength = length
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        let mine = self.address.bytes
        let theirs = candidate.bytes
        guard mine.count == theirs.count else { return false }
        var remaining = self.prefixLength
        for index in mine.indices where remaining > 0 {
            let bits = min(remaining, 8)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if mine[index] & mask != theirs[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    public var description: String { "\(self.address)/\(self.prefixLength)" }
}
