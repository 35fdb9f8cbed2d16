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

/// One benchmark executable: `Benchmarks/<name>`, run by package-benchmark's plugin, with
/// these products of the library.
func benchmarkTarget(_ name: String, products: [String]) -> Target {
    .executableTarget(
        name: name,
        dependencies: [.product(name: "Benchmark", package: "benchmark")]
            + products.map { .product(name: $0, package: libraryPackage) },
        path: "Benchmarks/\(name)",
        swiftSettings: [.swiftLanguageMode(.v6)],
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}

let package = Package(
    name: "swift-hbone-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        benchmarkTarget("IdentityBenchmarks", products: ["MeshIdentity"]),
        benchmarkTarget("HBONEBenchmarks", products: ["MeshIdentity", "HBONE", "InternetAddress"]),
        benchmarkTarget("MeshStateBenchmarks", products: ["MeshState", "InternetAddress"]),
    ]
)
