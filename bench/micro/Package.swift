// swift-tools-version: 6.1
// Micro-benchmarks of Lifeguard's hot paths (ordo-one/benchmark): instructions, wall time and mallocs per
// operation. A package of its own so that the main build and CI do not compile the benchmark framework.
//
//   cd bench/micro && swift package benchmark                       # run all
//   swift package --allow-writing-to-package-directory benchmark baseline update main   # record a baseline
//   swift package benchmark baseline compare main                    # compare the working tree with it
// Instructions are counted where the machine has hardware counters (not on the VM of bench/results).
import PackageDescription

let package = Package(
    name: "lifeguard-micro",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "lifeguard", path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    ],
    targets: [
        .executableTarget(
            name: "HotPaths",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "LifeguardLibraries", package: "lifeguard"),
            ],
            path: "Benchmarks/HotPaths",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
