public import InternetAddress

/// Makes the TCP connections HBONE uses, for a proxy that must create them somewhere other
/// than its own network namespace: ztunnel's in-pod mode opens every socket inside the
/// pod's namespace, marked 0x539 (`SO_MARK`), and connects to the app from the client's
/// address (`IP_TRANSPARENT`). Without a provider HBONE connects from the process's
/// namespace itself.
public struct HBONESocketProvider: Sendable {
    /// Connects to `destination` (from `source` when given) and returns the connected
    /// socket's descriptor; HBONE owns and closes it from then on.
    public var connect: @Sendable (_ destination: HBONEAddress, _ source: IPAddress?) async throws -> Int32

    /// A provider calling `connect`.
    public init(connect: @escaping @Sendable (_ destination: HBONEAddress, _ source: IPAddress?) async throws -> Int32) {
        self.connect = connect
    }
}
