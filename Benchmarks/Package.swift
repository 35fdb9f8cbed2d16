// swift-tools-version: 6.1
//
// Microbenchmarks for swift-hbone, in a package of their own so the library does not
// depend on the benchmark tool. Run from this directory:
//
//     swift package benchmark                 # all benchmarks
//     swift package benchmark --filter SPIFFE # one group
//
// Docs/performance.md explains the figures and the thresholds.

import PackageDescription

import struct Foundation.URL

/// SwiftPM names a path dependency after its directory, which is whatever the clone
/// was called; derive it instead of assuming "swift-hbone".
let libraryPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent

let package = Package(
    name: "swift-hbone-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "IdentityBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "MeshIdentity", package: libraryPackage),
            ],
            path: "Benchmarks/IdentityBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "HBONEBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "MeshIdentity", package: libraryPackage),
                .product(name: "HBONE", package: libraryPackage),
                .product(name: "InternetAddress", package: libraryPackage),
            ],
            path: "Benchmarks/HBONEBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "MeshStateBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "MeshState", package: libraryPackage),
                .product(name: "InternetAddress", package: libraryPackage),
            ],
            path: "Benchmarks/MeshStateBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
