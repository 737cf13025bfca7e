// swift-tools-version: 6.0
// Resident memory of an idle accepted TCP connection under several accept paths (SwiftNIO with no handler, with a
// small handler, with a small receive allocator, and a raw epoll loop). A package of its own: the main package and
// CI never build it. See README.md.
//
//   cd bench/idle-study && ./run            # build (release) and measure every mode
import PackageDescription

let package = Package(
    name: "idle-study",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3")
    ],
    targets: [
        .target(name: "CIdleShim"),
        .executableTarget(
            name: "IdleStudy",
            dependencies: [
                "CIdleShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
