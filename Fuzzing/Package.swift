// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for the pure parsers of ci-callbackd, kept out of the main package so that its
// `swift build` never needs the fuzzer runtime. Build and run them with `scripts/fuzz`; by hand:
//
//   swift build --package-path Fuzzing --scratch-path .build-fuzz -c release \
//       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//   .build-fuzz/release/fuzz-http-request -max_total_time=60 .build-fuzz/corpus/fuzz-http-request
//
// Each executable defines `LLVMFuzzerTestOneInput` and hands it to libFuzzer's driver.

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// Each fuzz target and the library of the main package it exercises.
let fuzzTargets: [(name: String, library: String)] = [
    ("fuzz-http-request", "HTTPWire"),
    ("fuzz-http-chunked", "HTTPWire"),
    ("fuzz-callback-decoder", "CIModel"),
    ("fuzz-ci-timestamp", "CIModel"),
]

let package = Package(
    name: "ci-callbackd-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The name pins the identity, whatever the checkout's directory is called.
        .package(name: "ci-callbackd", path: ".."),
    ],
    targets: [
        .target(name: "CLibFuzzer"),
        .target(
            name: "FuzzSupport",
            dependencies: ["CLibFuzzer", .product(name: "HTTPWire", package: "ci-callbackd")],
            swiftSettings: swiftSettings
        ),
    ]
        + fuzzTargets.map { target in
            .executableTarget(
                name: target.name,
                dependencies: ["FuzzSupport", .product(name: target.library, package: "ci-callbackd")],
                swiftSettings: swiftSettings
            )
        }
)
