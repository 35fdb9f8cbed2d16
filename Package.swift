// swift-tools-version: 6.1
//
// swift-hbone: the data plane of a sidecarless ("ambient") service mesh.
// Module map and the reasons for every dependency: Docs/architecture.md, Docs/decisions.md.

import PackageDescription

/// Swift 6 language mode plus the strictness the NIO/gRPC family uses, so that
/// dependency types only leak into our public API where an import says so.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-hbone",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "InternetAddress", targets: ["InternetAddress"]),
        .library(name: "MeshIdentity", targets: ["MeshIdentity"]),
        .library(name: "Netlink", targets: ["Netlink"]),
        .library(name: "HBONE", targets: ["HBONE"]),
        .library(name: "Redirect", targets: ["Redirect"]),
        .library(name: "CNI", targets: ["CNI"]),
        .library(name: "NodeAgent", targets: ["NodeAgent"]),
        .library(name: "ZDS", targets: ["ZDS"]),
        .library(name: "MeshState", targets: ["MeshState"]),
        .library(name: "ProtobufWire", targets: ["ProtobufWire"]),
        .library(name: "IstioCA", targets: ["IstioCA"]),
        .executable(name: "identity-demo", targets: ["IdentityDemo"]),
        .executable(name: "hbone-tunnel", targets: ["HBONETunnelExample"]),
        .executable(name: "istio-cni", targets: ["IstioCNIPlugin"]),
        .executable(name: "cni-agent", targets: ["CNIAgentExample"]),
        .executable(name: "ztunnel", targets: ["ZtunnelExample"]),
        .library(name: "AmbientMigration", targets: ["AmbientMigration"]),
        .executable(name: "ambient-migrate", targets: ["AmbientMigrateExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/jpsim/Yams.git", "5.1.0"..<"7.0.0"),
    ],
    targets: [
        // MARK: System libraries

        /// libmnl, the minimalistic netlink library (Debian: libmnl-dev). Only `Netlink` imports it.
        .systemLibrary(
            name: "CMNL",
            pkgConfig: "libmnl",
            providers: [.apt(["libmnl-dev"])]
        ),

        /// Linux calls Glibc's overlay leaves out: setns, SO_ORIGINAL_DST, transparent-proxy options.
        .target(name: "CLinuxNet"),

        // MARK: Library modules

        /// IPAddress and IPNetwork: the one address type every module shares.
        .target(name: "InternetAddress", swiftSettings: strictSettings),

        /// A safe Swift layer over libmnl: sockets, message building, attribute parsing.
        .target(
            name: "Netlink",
            dependencies: ["CMNL", "InternetAddress"],
            swiftSettings: strictSettings
        ),
        /// SPIFFE identities, keys and CSRs, the embedded CA, trust bundles and the
        /// certificate manager that rotates workload certificates.
        .target(
            name: "MeshIdentity",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),

        /// Redirect: in-pod traffic capture with iptables and netlink (istio-cni's kernel half).
        .target(
            name: "Redirect",
            dependencies: ["Netlink", "CLinuxNet", "InternetAddress"],
            swiftSettings: strictSettings
        ),

        /// CNI: the container network interface spec (SPEC 1.1) for Swift plugins.
        .target(
            name: "CNI",
            swiftSettings: strictSettings
        ),

        /// NodeAgent: pod eligibility, metadata, enrollment, the plugin API; ZDS to the node proxy.
        .target(
            name: "NodeAgent",
            dependencies: [
                "Redirect",
                "Netlink",
                "InternetAddress",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),

        /// The proto3 wire format by hand, for ZDS and Istio's certificate service.
        .target(name: "ProtobufWire", swiftSettings: strictSettings),

        /// IstioCA: Istio's certificate service (`istio.v1.auth.IstioCertificateService`,
        /// gRPC over TLS + HTTP/2): a server in front of the embedded CA and a client that is
        /// a `CertificateProvider`, so the node proxy can run with its CA in another process.
        .target(
            name: "IstioCA",
            dependencies: [
                "MeshIdentity",
                "ProtobufWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),

        /// ZDS: the agent ⇄ node proxy protocol that hands over pod network namespaces.
        .target(
            name: "ZDS",
            dependencies: [
                "ProtobufWire",
                "Redirect",
                "NodeAgent",
                "CLinuxNet",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),

        /// BoundedYAML: Yams' composition with YAML aliases bounded (no "billion laughs"),
        /// for the readers of files from outside (the local config, manifests).
        .target(
            name: "BoundedYAML",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),

        /// MeshState: ztunnel's local config (workloads, services, policies), lookups,
        /// outbound resolution and L4 authorization.
        .target(
            name: "MeshState",
            dependencies: ["InternetAddress", "BoundedYAML", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),

        /// HBONE: mutual TLS 1.3 + HTTP/2 CONNECT tunnels, client pool and server.
        .target(
            name: "HBONE",
            dependencies: [
                "MeshIdentity",
                "InternetAddress",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),

        // MARK: Examples

        .executableTarget(
            name: "IdentityDemo",
            dependencies: [
                "MeshIdentity",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/identity-demo",
            swiftSettings: strictSettings
        ),
        /// Both ends of an HBONE tunnel as processes: interop peer and benchmark subject.
        .executableTarget(
            name: "HBONETunnelExample",
            dependencies: [
                "MeshIdentity",
                "IstioCA",
                "HBONE",
                "InternetAddress",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Examples/hbone-tunnel",
            swiftSettings: strictSettings
        ),

        /// The CNI plugin binary (`istio-cni`), chained last in a conflist.
        .executableTarget(
            name: "IstioCNIPlugin",
            dependencies: ["CNI", "NodeAgent"],
            path: "Examples/istio-cni",
            swiftSettings: strictSettings
        ),

        /// The node agent binary: plugin API, enrollment, ZDS server.
        .executableTarget(
            name: "CNIAgentExample",
            dependencies: [
                "NodeAgent", "ZDS", "Redirect",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Examples/cni-agent",
            swiftSettings: strictSettings
        ),

        /// The node proxy (in-pod mode): ZDS, pod listeners, HBONE, L4 authorization, access log.
        .executableTarget(
            name: "ZtunnelExample",
            dependencies: [
                "HBONE", "IstioCA", "MeshIdentity", "MeshState", "Redirect", "ZDS", "NodeAgent", "InternetAddress",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Examples/ztunnel",
            swiftSettings: strictSettings
        ),

        /// The sidecar-to-ambient migration analyzer: which policies and routes the node
        /// proxy enforces, which need a waypoint, and the plan (Docs/migration.md).
        .target(
            name: "AmbientMigration",
            dependencies: ["BoundedYAML", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "AmbientMigrateExample",
            dependencies: [
                "AmbientMigration",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/ambient-migrate",
            swiftSettings: strictSettings
        ),

        // MARK: Tests

        /// Shared helpers for every test target: manual clock, certificate minting,
        /// external tools (openssl), capability checks (root, netns).
        .target(
            name: "MeshTestSupport",
            dependencies: [
                "MeshIdentity",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/MeshTestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "MeshIdentityTests",
            dependencies: [
                "MeshIdentity",
                "MeshTestSupport",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "HBONETests",
            dependencies: [
                "HBONE",
                "Redirect",
                "InternetAddress",
                "MeshIdentity",
                "MeshTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "RedirectTests",
            dependencies: [
                "Redirect",
                "Netlink",
                "InternetAddress",
                "MeshTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            exclude: ["Goldens"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "NodeAgentTests",
            dependencies: [
                "NodeAgent", "CNI", "Redirect", "ZDS", "MeshTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ZDSTests",
            dependencies: [
                "ZDS", "NodeAgent", "Redirect", "MeshTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "MeshStateTests",
            dependencies: ["MeshState", "InternetAddress", "MeshTestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "IstioCATests",
            dependencies: ["IstioCA", "MeshIdentity", "MeshTestSupport", .product(name: "X509", package: "swift-certificates")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "OneBoxTests",
            dependencies: ["MeshTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "BoundedYAMLTests",
            dependencies: ["BoundedYAML", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "CNITests",
            dependencies: ["CNI", "MeshTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "AmbientMigrationTests",
            dependencies: ["AmbientMigration", "MeshTestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: strictSettings
        ),
        // MARK: Fuzzing

        /// The parsers that meet outside bytes as fuzz targets (Docs/fuzzing.md): replayed by
        /// MeshFuzzingTests on every test run, run under libFuzzer by scripts/fuzz.
        .target(
            name: "MeshFuzzing",
            dependencies: [
                "HBONE", "InternetAddress", "ZDS", "NodeAgent", "IstioCA", "Netlink", "CNI", "Redirect", "MeshIdentity",
                "MeshState", "AmbientMigration", "MeshTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            path: "Tests/Fuzz/MeshFuzzing",
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "mesh-fuzz",
            dependencies: ["MeshFuzzing"],
            path: "Tests/Fuzz/mesh-fuzz",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "MeshFuzzingTests",
            dependencies: ["MeshFuzzing", "MeshTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "NetlinkTests",
            dependencies: ["Netlink", "InternetAddress", "MeshTestSupport"],
            swiftSettings: strictSettings
        ),
    ]
)
