#if canImport(Glibc)
internal import Glibc
#endif
public import InternetAddress
internal import NIOCore

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
        var text = authority
        guard let address = text.withUTF8({ Self.parse($0) }) else { return nil }
        self = address
    }

    /// The parse, on the UTF-8 bytes (it runs once per CONNECT).
    private static func parse(_ text: UnsafeBufferPointer<UInt8>) -> HBONEAddress? {
        let colon = UInt8(ascii: ":")
        let host: Range<Int>
        let portStart: Int
        let bracketed = text.first == UInt8(ascii: "[")
        if bracketed {
            guard let close = text.firstIndex(of: UInt8(ascii: "]")), close + 1 < text.count, text[close + 1] == colon
            else { return nil }
            host = 1..<close
            portStart = close + 2
        } else {
            guard let last = text.lastIndex(of: colon), text.firstIndex(of: colon) == last else { return nil }
            host = 0..<last
            portStart = last + 1
        }
        // 1–65535, decimal digits only.
        let digits = text[portStart...]
        guard (1...5).contains(digits.count) else { return nil }
        var port: UInt32 = 0
        for digit in digits {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            port = port * 10 + UInt32(digit - UInt8(ascii: "0"))
        }
        guard port != 0, let port16 = UInt16(exactly: port) else { return nil }
        guard let ip = IPAddress(String(decoding: UnsafeBufferPointer(rebasing: text[host]), as: UTF8.self)),
            ip.isIPv6 == bracketed
        else { return nil }
        return HBONEAddress(ip: ip, port: port16)
    }

    /// `ip:port`, IPv6 in brackets.
    public var description: String {
        self.ip.isIPv6 ? "[\(self.ip)]:\(self.port)" : "\(self.ip):\(self.port)"
    }
}

extension HBONEAddress {
    /// The address of a socket, from its bytes (no text round trip through `inet_ntop`);
    /// IPv4-mapped IPv6 addresses are unmapped.
    init?(socketAddress: SocketAddress) {
        guard let port = socketAddress.port, let port16 = UInt16(exactly: port) else { return nil }
        let ip: IPAddress?
        switch socketAddress {
        // The address bytes at their Linux ABI offsets (`struct sockaddr_in`: family, port,
        // then the 4 bytes at 4; `struct sockaddr_in6`: family, port, flow info, then the 16
        // bytes at 8), as the field names are declared by a module NIO does not re-export.
        case .v4(let address):
            ip = withUnsafeBytes(of: address.address) { IPAddress(bytes: Array($0[4..<8])) }
        case .v6(let address):
            ip = withUnsafeBytes(of: address.address) { IPAddress(bytes: Array($0[8..<24])) }
        case .unixDomainSocket:
            ip = nil
        }
        guard let ip else { return nil }
        self.init(ip: ip.unmapped, port: port16)
    }

    /// The socket address to connect to (from the address bytes, no text round trip).
    var socketAddress: SocketAddress {
        get throws {
            try SocketAddress(packedIPAddress: ByteBuffer(bytes: self.ip.bytes), port: Int(self.port))
        }
    }
}
