public import MeshIdentity

/// An HTTP status an HBONE server answers a `CONNECT` with (ztunnel `src/proxy/inbound.rs`).
public struct HBONEStatus: Hashable, Sendable, CustomStringConvertible {
    /// The status code.
    public var code: Int

    /// Creates a status.
    public init(code: Int) { self.code = code }

    /// The tunnel is established: sent only after authorization passed and the upstream connected.
    public static let ok = HBONEStatus(code: 200)
    /// Malformed request: not CONNECT, no valid authority, or the authority is not this pod.
    public static let badRequest = HBONEStatus(code: 400)
    /// Denied by authorization policy.
    public static let unauthorized = HBONEStatus(code: 401)
    /// The upstream is unknown or could not be connected.
    public static let serviceUnavailable = HBONEStatus(code: 503)

    public var description: String { "\(self.code)" }
}

/// A `CONNECT` request as the server's decision callback sees it.
public struct HBONEInboundRequest: Sendable {
    /// The client's SPIFFE identity, verified during the TLS handshake.
    public var peerIdentity: SPIFFEID
    /// The TCP peer of the tunnel connection.
    public var peerAddress: HBONEAddress?
    /// The local address the tunnel connection arrived on (the pod IP in in-pod mode).
    public var localAddress: HBONEAddress?
    /// The requested target (`:authority`).
    public var target: HBONEAddress
    /// `forwarded`, `baggage`, `traceparent`.
    public var metadata: HBONERequestMetadata
}

/// What the server does with a `CONNECT`.
public enum HBONEDecision: Sendable, Hashable {
    /// Connect to `upstream`, answer 200 once connected (503 if that fails), then pump bytes.
    case forward(to: HBONEAddress)
    /// Answer `status` and end the stream; `reason` goes to the log.
    case reject(HBONEStatus, reason: String)
}

/// One finished inbound tunnel, for logs and metrics.
public struct HBONETunnelRecord: Sendable {
    /// The request that opened it.
    public var request: HBONEInboundRequest?
    /// The status sent.
    public var status: HBONEStatus
    /// Why it was rejected or failed, if it was.
    public var reason: String?
    /// Bytes in each direction.
    public var bytes: TunnelByteCounts
    /// From the request's HEADERS to the end of the tunnel (ztunnel's access-log `duration`).
    public var duration: Duration
}
