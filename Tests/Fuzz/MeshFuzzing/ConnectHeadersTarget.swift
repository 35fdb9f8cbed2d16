internal import HBONE
internal import InternetAddress

/// The text an HBONE `CONNECT` carries, parsed on every inbound tunnel: `:authority`,
/// `forwarded` (RFC 7239), `baggage` (W3C Baggage) and `traceparent` (W3C Trace Context),
/// and the IP addresses and prefixes inside them and in the local config and policies.
///
/// Input: one byte picks the parser, the rest is the header value. Property: whatever a
/// parser accepts, it accepts again in the form we write it (`description`, the header
/// value we send), with the same result — so a value read from a peer and passed on (as a
/// waypoint or the ztunnel example's access log does) means the same thing to the next
/// reader. For `traceparent`, whose form is fixed (§3.2.2: lower-case hex, 55 octets), the
/// written form must be the input itself.
enum ConnectHeadersTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let which = reader.byte() % 6
        let text = reader.restAsText
        switch which {
        case 0:
            guard let address = HBONEAddress(authority: text) else { return false }
            try require(HBONEAddress(authority: address.description) == address, "authority \(text.debugDescription) → \(address)")
        case 1:
            let parsed = HBONERequestMetadata.parseForwarded(text)
            guard let address = parsed.for else { return false }
            let host = parsed.host.flatMap { $0.isEmpty ? nil : $0 }
            let written = HBONERequestMetadata(forwardedFor: address, forwardedHost: host).forwardedHeader ?? ""
            let again = HBONERequestMetadata.parseForwarded(written)
            try require(
                again.for == address && again.host == host,
                "forwarded \(text.debugDescription) → \(written.debugDescription) → \(String(describing: again))"
            )
        case 2:
            let baggage = HBONERequestMetadata.Baggage(headerValue: text)
            let written = baggage.headerValue
            let again = HBONERequestMetadata.Baggage(headerValue: written)
            try require(again == baggage, "baggage \(text.debugDescription) → \(written.debugDescription) → \(again)")
        case 3:
            guard let trace = HBONERequestMetadata.TraceParent(headerValue: text) else { return false }
            try require(trace.description == text, "traceparent \(text.debugDescription) written as \(trace.description)")
        case 4:
            guard let address = IPAddress(text) else { return false }
            try require(IPAddress(address.description) == address, "address \(text.debugDescription) → \(address)")
            try require(IPAddress(bytes: address.bytes) == address, "address \(address): bytes do not read back")
        default:
            guard let network = IPNetwork(text) else { return false }
            try require(IPNetwork(network.description) == network, "prefix \(text.debugDescription) → \(network)")
            try require(network.contains(network.address), "prefix \(network) does not contain its own address")
        }
        return true
    }
}
