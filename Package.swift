// swift-tools-version:6.2
import PackageDescription

// How the release build of the executable is linked on Linux, for its resident memory (bench/README.md, "Idle RSS"):
// with lld, so that the functions Lifeguard runs are laid out together (lifeguard.order, made by bench/symbol-order)
// instead of scattered among the ~220,000 it links, which kept most of its 26 MB of code resident; with relative
// relocations packed (2.8 MB of them were read at every start); and without exporting every Swift symbol as dynamic
// (the Swift toolchain's static-stdlib default: 3 MB of symbol tables that nothing looks up).
let releaseLink = LinkerSetting.unsafeFlags(
    [
        "-use-ld=lld",
        "-Xlinker", "--no-export-dynamic",
        "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
        "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Sources/Lifeguard/lifeguard.order",
        "-Xlinker", "--no-warn-symbol-ordering",
    ],
    .when(platforms: [.linux], configuration: .release)
)

// Every dependency comes from the local mirror at a listed version; README.md says why each is here.
let package = Package(
    name: "lifeguard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lifeguard", targets: ["Lifeguard"]),
        // For bench/micro, the hot-path micro-benchmarks (a package of their own).
        .library(
            name: "LifeguardLibraries",
            targets: ["PGWire", "PoolCore", "ConnectionPool", "LifeguardMetrics"]
        ),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // C libraries from Debian, found through pkg-config.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CMicroHTTPD",
            pkgConfig: "libmicrohttpd",
            providers: [.apt(["libmicrohttpd-dev", "libgnutls28-dev"])]
        ),
        // crypt_r from libxcrypt: bcrypt verification of the metrics endpoint's basic_auth_users.
        .systemLibrary(
            name: "CCrypt",
            pkgConfig: "libxcrypt",
            providers: [.apt(["libcrypt-dev"])]
        ),

        // The pooling rules: a pure state machine, no I/O, no clock reads.
        .target(
            name: "PoolCore",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")]
        ),
        // The live pool: runs PoolCore's actions (connects, timers) behind a lock.
        .target(
            name: "ConnectionPool",
            dependencies: ["PoolCore"]
        ),
        // The metric catalogue and its Prometheus text rendering.
        .target(name: "LifeguardMetrics"),
        // The metrics endpoint's web configuration (exporter-toolkit's format): TLS material and basic-auth users,
        // read and checked.
        .target(
            name: "WebConfig",
            dependencies: [
                "Yams",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // /metrics, /healthz and /readyz over libmicrohttpd, on its own thread; HTTPS and basic auth per WebConfig.
        .target(
            name: "Exporter",
            dependencies: [
                "CMicroHTTPD", "CCrypt", "LifeguardMetrics", "WebConfig",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // libpq where libpq is the reference: connection strings and the health ping.
        .target(
            name: "Upstream",
            dependencies: ["CLibPQ"]
        ),
        // TOML file, LIFEGUARD_* environment, flags: one validated configuration.
        .target(
            name: "LifeguardConfig",
            dependencies: ["Upstream", "PoolCore", "TOMLKit", "WebConfig"]
        ),
        // The PostgreSQL v3 protocol: framing, the messages the proxy acts on, authentication both ways.
        .target(
            name: "PGWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The per-client session as a pure state machine: what a client and its server connection owe each other,
        // and how a server connection goes back. No event loops, no sockets.
        .target(
            name: "ProxyCore",
            dependencies: [
                "PGWire", "PoolCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The PgBouncer-compatible admin console (database `pgbouncer`): its command parser, the SHOW tables and their
        // encoding, computed from a snapshot the proxy gathers. No I/O.
        .target(
            name: "AdminConsole",
            dependencies: ["PGWire", "PoolCore", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // The wire-protocol proxy: thin SwiftNIO handlers that feed ProxyCore and run its actions.
        .target(
            name: "Proxy",
            dependencies: [
                "PGWire", "ProxyCore", "ConnectionPool", "PoolCore", "LifeguardMetrics", "LifeguardConfig", "Upstream",
                "AdminConsole",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "Lifeguard",
            dependencies: [
                "PoolCore", "ConnectionPool", "LifeguardMetrics", "Exporter", "Upstream", "LifeguardConfig", "Proxy",
                "WebConfig",
                "AdminConsole",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            exclude: ["lifeguard.order"],
            linkerSettings: [releaseLink]
        ),

        // The throwaway PostgreSQL 15 cluster the integration tests share.
        .target(name: "PostgresTestSupport", path: "Tests/PostgresTestSupport"),
        // A manual clock for pools, shared by the tests that drive a live pool's timers.
        .target(name: "ConnectionPoolTestSupport", path: "Tests/ConnectionPoolTestSupport"),

        .testTarget(
            name: "PGWireTests",
            dependencies: [
                "PGWire", "PostgresTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ProxyCoreTests",
            dependencies: [
                "ProxyCore", "PGWire", "PoolCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ProxyTests",
            dependencies: [
                "Proxy", "ProxyCore", "PGWire", "PoolCore", "ConnectionPool", "LifeguardMetrics", "LifeguardConfig",
                "Upstream",
                "PostgresTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "PoolCoreTests", dependencies: ["PoolCore"]),
        .testTarget(
            name: "AdminConsoleTests",
            dependencies: ["AdminConsole", "PoolCore", "PGWire", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "ConnectionPoolTests",
            dependencies: ["ConnectionPool", "PoolCore", "ConnectionPoolTestSupport"]
        ),
        .testTarget(name: "LifeguardMetricsTests", dependencies: ["LifeguardMetrics"]),
        .testTarget(name: "ExporterTests", dependencies: ["Exporter", "LifeguardMetrics", "WebConfig"]),
        .testTarget(
            name: "WebConfigTests",
            dependencies: [
                "WebConfig",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(name: "UpstreamTests", dependencies: ["Upstream", "PostgresTestSupport"]),
        .testTarget(name: "PostgresTestSupportTests", dependencies: ["PostgresTestSupport"]),
        .testTarget(name: "LifeguardConfigTests", dependencies: ["LifeguardConfig", "Upstream", "WebConfig"]),
        .testTarget(
            name: "LifeguardTests",
            dependencies: ["Lifeguard", "ConnectionPool", "LifeguardMetrics", "PoolCore", "ConnectionPoolTestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

for target in package.targets where target.type != .system {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    target.swiftSettings = settings
}

// The relay's hot path (every message of every transaction) runs through these targets. Release builds drop Swift's
// run-time exclusivity checks there: they cost about an eighth of the instructions per relayed transaction
// (bench/instructions), most of them on class properties and NIO's inlined ByteBuffer code. Debug builds, which the
// test suite runs, keep the checks, and the compiler's static checks hold in both. The release builds of scripts/
// and deploy/Dockerfile also pass -Xswiftc -enforce-exclusivity=unchecked, which reaches the dependencies (SwiftNIO's
// own checks are another tenth); this setting keeps a plain `swift build -c release` close to them.
let hotPath: Set = ["PGWire", "PoolCore", "ConnectionPool", "ProxyCore", "Proxy"]
for target in package.targets where hotPath.contains(target.name) {
    var settings = target.swiftSettings ?? []
    settings.append(.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)))
    target.swiftSettings = settings
}
