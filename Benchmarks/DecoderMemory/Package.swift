// swift-tools-version:6.1
import PackageDescription

// The decoders' working memory per body byte (issue 10 §2), kept out of the main package like Fuzzing/.
// Run it with Benchmarks/decoder-memory, which builds it into .build-bench/ and prints a table.
let package = Package(
    name: "ci-callbackd-decoder-memory",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The name pins the identity, whatever the checkout's directory is called.
        .package(name: "ci-callbackd", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "decoder-memory",
            dependencies: [.product(name: "CIModel", package: "ci-callbackd")],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
    ]
)
