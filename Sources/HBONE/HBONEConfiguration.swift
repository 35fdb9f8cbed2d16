internal import NIOCore

/// HBONE's TLS and HTTP/2 parameters, with ztunnel's values as defaults
/// (`src/proxy/h2/client.rs`, `src/proxy/h2/server.rs`, `src/config.rs`).
///
/// The flow-control defaults matter: HTTP/2's own defaults (64 KiB windows, 16 KiB
/// frames) were measured 11× slower for tunnels on this stack, so every knob of
/// swift-nio-http2 is set from here (initial SETTINGS, connection window, stream window,
/// stream write watermarks).
public struct HBONEConfiguration: Sendable, Hashable {
    /// HTTP/2 settings and flow control.
    public struct HTTP2: Sendable, Hashable {
        /// SETTINGS_INITIAL_WINDOW_SIZE and the per-stream window we maintain. Default 4 MiB.
        public var streamWindow: Int = 4 << 20
        /// The connection window we maintain (WINDOW_UPDATE on stream 0). Default 16 MiB,
        /// four times the stream window so one unread stream cannot stall the tunnel.
        public var connectionWindow: Int = 16 << 20
        /// SETTINGS_MAX_FRAME_SIZE. Default 1 MiB (RFC 9113 §6.5.2 allows up to 2^24−1).
        public var maximumFrameSize: Int = 1 << 20
        /// Per-stream outbound buffer high watermark: a stream stops being writable above it,
        /// which stops reads from its TCP side. Default 1 MiB (hyper's client
        /// `max_send_buf_size`, which ztunnel keeps): bytes the peer's window has not
        /// admitted yet are memory, not throughput.
        public var streamHighWatermark: Int = 1 << 20
        /// …and becomes writable again below this. Default 512 KiB.
        public var streamLowWatermark: Int = 512 << 10
        /// SETTINGS_MAX_CONCURRENT_STREAMS a server advertises. Default 200.
        public var serverMaximumConcurrentStreams: Int = 200
        /// Most streams a client puts on one connection (capped by the server's limit). Default 100.
        public var clientMaximumStreamsPerConnection: Int = 100
        /// SETTINGS_MAX_HEADER_LIST_SIZE a server advertises. Default 64 KiB.
        public var serverMaximumHeaderListSize: Int = 64 << 10
        /// SETTINGS_MAX_HEADER_LIST_SIZE a client advertises. Default 16 KiB.
        public var clientMaximumHeaderListSize: Int = 16 << 10

        /// The defaults above.
        public init() {}
    }

    /// Connection liveness.
    public struct Keepalive: Sendable, Hashable {
        /// Interval between PINGs, sent regardless of traffic. Default 10 s.
        public var interval: Duration = .seconds(10)
        /// A connection with no PING ACK for this long is dead. Default 20 s.
        public var timeout: Duration = .seconds(20)

        /// The defaults above.
        public init() {}
    }

    /// HTTP/2 settings and flow control.
    public var http2 = HTTP2()
    /// Connection liveness.
    public var keepalive = Keepalive()
    /// How long a graceful shutdown waits for open tunnels after GOAWAY. Default 5 s
    /// (ztunnel's `CONNECTION_TERMINATION_DEADLINE`).
    public var drainDeadline: Duration = .seconds(5)
    /// Timeout of the outer TCP connect to a peer's 15008. Default 10 s.
    public var connectTimeout: Duration = .seconds(10)
    /// Idle pooled connections are closed after this long. Default 5 minutes
    /// (`POOL_UNUSED_RELEASE_TIMEOUT`). Zero closes a connection as soon as its last stream
    /// ends; with ``HTTP2/clientMaximumStreamsPerConnection`` at 1 that turns
    /// pooling off (every tunnel its own mTLS connection and handshake).
    public var poolIdleTimeout: Duration = .seconds(300)

    /// Largest single socket read, on TLS and plain sides alike: NIO's adaptive allocator
    /// starts at 4 KiB and grows to this under load within a few reads. Default 128 KiB.
    /// NIO's own maximum, 64 KiB, caps every DATA frame the pump produces at 64 KiB and
    /// measured 0.90× the throughput of 128 KiB; 256 KiB (the default until the
    /// thirteenth session) and 1 MiB cost less system time per byte but left the two
    /// relays waiting on each other, at 0.92× and 0.81× (interleaved rounds,
    /// Docs/performance.md). Each channel keeps its last read buffer for the next read, so
    /// the starting size is what an idle tunnel holds: 4 KiB instead of 16 KiB halved the
    /// memory per idle tunnel (about 24 → 11 KiB per process, Docs/performance.md).
    public var maximumReadSize: Int = 128 << 10

    /// Whether a tunnel's DATA bypasses nio-http2's stream channels in both directions:
    /// inbound payloads go straight from the TLS layer to its TCP side
    /// (``InboundDataSplicer``: no copy into nio-http2's frame parser, no child-channel
    /// pipeline per message), and its TCP side's bytes are framed as DATA below nio-http2
    /// (``OutboundDataSplicer``); the splicers do the flow control for those bytes. Default
    /// on; off is the plain nio-http2 path, kept for comparison (`Docs/performance.md`).
    public var splicesData = true

    /// The well-known HBONE port.
    public static let port: UInt16 = 15008

    /// The defaults above.
    public init() {}
}

extension HBONEConfiguration {
    var readAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 4096, maximum: max(64 << 10, self.maximumReadSize))
    }
}
