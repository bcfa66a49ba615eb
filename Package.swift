// swift-tools-version:6.0
import PackageDescription

// Release builds skip the run-time exclusivity checks (about a tenth of a request's
// instructions by callgrind); debug builds and the tests keep them.
let fast: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "keygate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keygate", targets: ["keygate"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // libcrypto (SHA-256, RAND_bytes) and libssl, from apt's libssl-dev.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // GeoIP country lookups, from apt's libmaxminddb-dev.
        .systemLibrary(name: "CMaxMindDB", pkgConfig: "libmaxminddb", providers: [.apt(["libmaxminddb-dev"])]),
        // The policy file's YAML, from apt's libyaml-dev: its event parser, composed by KeygateCore.
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        // Redis, for counters shared by a fleet of gates, from apt's libhiredis-dev.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        // Pure HTTP/1.1: bytes in, values or typed errors out. No Foundation, no Dispatch.
        .target(name: "KeygateHTTP", swiftSettings: fast),
        // Policy, keys, GeoIP, the decision and the usage event.
        .target(name: "KeygateCore", dependencies: ["KeygateHTTP", "COpenSSL", "CMaxMindDB", "CKeygateSys", "CYAML"], swiftSettings: fast),
        // The only module with sockets and Dispatch sources.
        // epoll and accept4, which Swift's Glibc module does not import.
        .target(name: "CKeygateSys"),
        // OpenSSL's server side: contexts, SNI, sessions on memory BIOs (macros Swift cannot import).
        .target(name: "CKeygateTLS", dependencies: ["COpenSSL"]),
        .target(name: "KeygateIO", dependencies: ["CKeygateSys", "CKeygateTLS"], swiftSettings: fast),
        // The fleet's shared state in Redis: connections, the sync script, pushed key changes.
        .target(name: "KeygateCluster", dependencies: ["CHiredis", "KeygateCore"]),
        // Glue: sessions, upstream pool, server lifecycle.
        .target(
            name: "KeygateProxy",
            dependencies: ["KeygateCore", "KeygateIO", "KeygateHTTP", "KeygateCluster", .product(name: "Logging", package: "swift-log")], swiftSettings: fast),
        .executableTarget(
            name: "keygate",
            dependencies: [
                "KeygateProxy", "KeygateCore", "KeygateIO", "KeygateCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // libFuzzer target for what peers send (request heads and bodies, upstream answers,
        // WebSocket frames): `make fuzz` builds it with -sanitize=fuzzer,address.
        .executableTarget(name: "KeygateFuzz", dependencies: ["KeygateCore", "KeygateHTTP"], swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        // libFuzzer target for the files others write (key-store lines, usage lines, the policy)
        // and the forwarding headers of trusted proxies.
        .executableTarget(name: "KeygateFuzzFiles", dependencies: ["KeygateCore", "KeygateHTTP"], swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        .testTarget(name: "KeygateHTTPTests", dependencies: ["KeygateHTTP"]),
        .testTarget(name: "KeygateCoreTests", dependencies: ["KeygateCore", "KeygateHTTP"]),
        .testTarget(name: "KeygateIOTests", dependencies: ["KeygateIO"]),
    ]
)
