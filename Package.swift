// swift-tools-version:6.1
import PackageDescription

/// Settings every Swift target shares: Swift 6 language mode is the default for tools 6.x;
/// `ExistentialAny` keeps `any` explicit, as swift-log and swift-nio do.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "ci-callbackd",
    // Linux only: the listener is epoll and the sockets are Glibc's (no kqueue port), so no macOS claim.
    products: [
        .executable(name: "ci-callbackd", targets: ["ci-callbackd"]),
        .executable(name: "ci-simulator", targets: ["ci-simulator"]),
        // The pure parsers as libraries, so the fuzz package (Fuzz/) can depend on them by path.
        .library(name: "HTTPWire", targets: ["HTTPWire"]),
        .library(name: "CIModel", targets: ["CIModel"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
    ],
    targets: [
        // MARK: C shims and system libraries
        .target(name: "CEpoll"),
        // Outgoing webhooks: libcurl (already linked by FoundationNetworking) driven from C, since its
        // options are variadic; see Sources/CallbackService/Workers/WebhookHTTPClient.swift.
        .target(name: "CWebhookHTTP", linkerSettings: [.linkedLibrary("curl")]),
        .systemLibrary(
            name: "CCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),

        // MARK: Pure code: no sockets, no database
        .target(name: "HTTPWire", swiftSettings: swiftSettings),
        .target(name: "CIModel", swiftSettings: swiftSettings),
        .target(name: "COSSigning", dependencies: ["CCrypto"], swiftSettings: swiftSettings),
        // Duration and Date in the units APIs, SQL and metrics take; below every target that converts.
        .target(name: "TimeUnits", swiftSettings: swiftSettings),

        // MARK: I/O at the edges
        .target(
            name: "HTTPListener",
            dependencies: [
                "HTTPWire", "CEpoll", "TimeUnits",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PostgresLibPQ",
            dependencies: ["CLibPQ", "TimeUnits", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "JobStore",
            dependencies: [
                "PostgresLibPQ", "CIModel", "TimeUnits", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedRepositoryFiles"]
        ),
        .target(
            name: "CallbackService",
            dependencies: [
                // Not PostgresLibPQ: the store speaks for the database, driver errors included.
                "HTTPWire", "HTTPListener", "CIModel", "CIClient", "JobStore", "COSSigning", "CWebhookHTTP", "TimeUnits",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedRepositoryFiles"]
        ),

        .target(
            name: "CIClient",
            dependencies: ["COSSigning", "CIModel", "TimeUnits", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CISimulator",
            dependencies: [
                "CIClient", "CIModel", "COSSigning", "HTTPListener", "HTTPWire", "TimeUnits",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Build time: migrations/*.sql, openapi.yaml and console/* compiled into JobStore and CallbackService
        .executableTarget(name: "embed-files", swiftSettings: swiftSettings),
        .plugin(name: "EmbedRepositoryFiles", capability: .buildTool(), dependencies: ["embed-files"]),

        // MARK: The executable: wiring only
        .executableTarget(
            name: "ci-callbackd",
            dependencies: [
                "CallbackService", "CIClient", "CIModel", "JobStore", "PostgresLibPQ", "HTTPListener", "HTTPWire", "CEpoll", "TimeUnits",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "ci-simulator",
            dependencies: [
                "CISimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        // What the test targets share: child processes waited for off Swift's cooperative pool, the
        // repository, the test database, the built products. Not a product: only test targets link it.
        .target(name: "CSpawn", path: "Tests/CSpawn"),
        .target(name: "TestSupport", dependencies: ["CSpawn"], path: "Tests/TestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "TestSupportTests", dependencies: ["TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "HTTPWireTests", dependencies: ["HTTPWire"], swiftSettings: swiftSettings),
        .testTarget(name: "HTTPListenerTests", dependencies: ["HTTPListener", "HTTPWire"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CIModelTests",
            dependencies: ["CIModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CallbackServiceTests",
            dependencies: ["CallbackService", "CIModel", "HTTPListener", "HTTPWire", "JobStore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "TimeUnitsTests", dependencies: ["TimeUnits"], swiftSettings: swiftSettings),
        .testTarget(name: "COSSigningTests", dependencies: ["COSSigning"], swiftSettings: swiftSettings),
        .testTarget(name: "JobStoreTests", dependencies: ["JobStore", "PostgresLibPQ", "CIModel", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CIClientTests",
            dependencies: ["CIClient", "CIModel", "COSSigning", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "HTTPWire", "HTTPListener", "CIModel", "PostgresLibPQ", "JobStore", "CallbackService",
                "CIClient", "CISimulator", "COSSigning", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "DeployTests", dependencies: ["TestSupport", .product(name: "Yams", package: "Yams")], swiftSettings: swiftSettings),
        .testTarget(name: "PostgresLibPQTests", dependencies: ["PostgresLibPQ"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CLITests",
            dependencies: [
                "ci-callbackd", "CallbackService", "HTTPListener", "HTTPWire", "JobStore", "PostgresLibPQ", "TestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
