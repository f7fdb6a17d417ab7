import Foundation
import HTTPWire
import Testing

@testable import CallbackService

/// Pins the served OpenAPI document to `openapi.yaml` and to the routing table, without a server:
/// the embedded copy must be the file byte for byte, every documented operation must resolve to a
/// route with exactly the documented methods, and every `Route` case must be documented.
@Suite("OpenAPI document")
struct OpenAPIDocumentTests {
    @Test func embeddedDocument_isByteForByteOpenAPIYAML() throws {
        let file = try #require(
            FileManager.default.contents(atPath: openAPIRepositoryRoot.appendingPathComponent("openapi.yaml").path),
            "openapi.yaml not found at the repository root"
        )
        let embedded = Array(OpenAPIDocument.yaml.utf8)
        let onDisk = Array(file)
        // Compared as a Bool with the first differing offset: printing two 50 KB arrays helps nobody.
        let common = min(embedded.count, onDisk.count)
        let firstDifference = (0..<common).first { embedded[$0] != onDisk[$0] } ?? common
        let identical = embedded.count == onDisk.count && firstDifference == embedded.count
        #expect(
            identical,
            "the compiled-in document differs from openapi.yaml at byte \(firstDifference) (\(embedded.count) vs \(onDisk.count) bytes): the EmbedRepositoryFiles plugin lost or changed bytes"
        )
    }

    @Test func document_isOpenAPI31_andListsOperations() throws {
        let document = try DocumentedOperations(yaml: OpenAPIDocument.yaml)
        #expect(OpenAPIDocument.yaml.hasPrefix("openapi: 3.1.0\n"))
        #expect(document.methodsByPath.count >= RouteSamples.all.count)
    }

    @Test func everyDocumentedOperation_resolvesToARoute() throws {
        let document = try DocumentedOperations(yaml: OpenAPIDocument.yaml)
        for (path, methods) in document.methodsByPath {
            let segments = RouteSamples.segments(forTemplate: path)
            for method in methods {
                let match = Route.match(method: method, segments: segments)
                guard case .route = match else {
                    Issue.record("\(method.rawValue) \(path) is documented but resolves to \(match)")
                    continue
                }
            }
        }
    }

    /// A path's documented methods must be exactly what the service answers; anything else is 405
    /// with the same set in `Allow`, so a client reading the document never meets a surprise 405.
    @Test func documentedMethods_areExactlyTheAllowedOnes() throws {
        let document = try DocumentedOperations(yaml: OpenAPIDocument.yaml)
        for (path, methods) in document.methodsByPath {
            let segments = RouteSamples.segments(forTemplate: path)
            let match = Route.match(method: HTTPMethod(rawValue: "PROPFIND"), segments: segments)
            guard case .methodNotAllowed(let allowed) = match else {
                Issue.record("PROPFIND \(path) should be 405, got \(match)")
                continue
            }
            #expect(Set(allowed.map(\.rawValue)) == Set(methods.map(\.rawValue)), "\(path)")
        }
    }

    @Test(arguments: RouteSamples.all)
    func everyRoute_isDocumented(route: Route) throws {
        let document = try DocumentedOperations(yaml: OpenAPIDocument.yaml)
        let template = RouteSamples.template(for: route)
        let methods = try #require(document.methodsByPath[template], "\(route) should be documented as \(template)")
        let resolved = methods.contains { method in
            Route.match(method: method, segments: RouteSamples.segments(forTemplate: template)) == .route(route)
        }
        #expect(resolved, "\(template) does not resolve to \(route)")
    }

    @Test func parser_readsPathsAndMethods_andIgnoresOtherSections() throws {
        let yaml = """
            openapi: 3.1.0
            paths:
              /a/{id}:
                parameters:
                  - name: id
                get:
                  summary: x
                head:
                  summary: y
              '/b':
                post:
                  responses: {}
            components:
              schemas:
                get:
                  type: object
            """
        let document = try DocumentedOperations(yaml: yaml)
        #expect(document.methodsByPath.mapValues { $0.map(\.rawValue) } == ["/a/{id}": ["GET", "HEAD"], "/b": ["POST"]])
        #expect(throws: (any Error).self) { try DocumentedOperations(yaml: "openapi: 3.1.0\n") }
    }
}

/// The repository root: this file is `Tests/CallbackServiceTests/OpenAPIDocumentTests.swift`.
private let openAPIRepositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The route table's cases, each with the document path that must describe it.
///
/// `template(for:)` switches over `Route` without a default, so adding a route does not compile
/// until it is listed here, and then `everyRoute_isDocumented` demands it in openapi.yaml.
private enum RouteSamples {
    static let jobID = "j515a494af86111ecb8546d80f2baf56f"
    static let subscriptionID = "sub_0123456789abcdef01234567"

    static let all: [Route] = [
        .ingestCallback(token: nil),
        .ingestCallback(token: "t0k3n"),
        .listJobs,
        .job(jobID: jobID),
        .watermark(jobID: jobID),
        .jobCallbacks(jobID: jobID),
        .callbackBody(jobID: jobID, callbackID: 1),
        .submitWatermarkExtraction,
        .events,
        .subscriptions,
        .subscription(id: subscriptionID),
        .subscriptionDeliveries(id: subscriptionID),
        .retryDelivery(id: subscriptionID, deliveryID: "7"),
        .replay(id: subscriptionID),
        .health,
        .readiness,
        .metrics,
        .openAPI,
        // Not `.console`: the operator console is HTML for people, outside the API and its document; the
        // README documents its pages, and ConsoleTests test them.
    ]

    static func template(for route: Route) -> String {
        switch route {
        case .ingestCallback(let token): token == nil ? "/v1/callbacks" : "/v1/callbacks/{token}"
        case .listJobs: "/v1/jobs"
        case .job: "/v1/jobs/{JobId}"
        case .watermark: "/v1/jobs/{JobId}/watermark"
        case .jobCallbacks: "/v1/jobs/{JobId}/callbacks"
        case .callbackBody: "/v1/jobs/{JobId}/callbacks/{CallbackId}/body"
        case .submitWatermarkExtraction: "/v1/watermark-extractions"
        case .events: "/v1/events"
        case .subscriptions: "/v1/subscriptions"
        case .subscription: "/v1/subscriptions/{SubscriptionId}"
        case .subscriptionDeliveries: "/v1/subscriptions/{SubscriptionId}/deliveries"
        case .retryDelivery: "/v1/subscriptions/{SubscriptionId}/deliveries/{DeliveryId}/retry"
        case .replay: "/v1/subscriptions/{SubscriptionId}/replay"
        case .health: "/healthz"
        case .readiness: "/readyz"
        case .metrics: "/metrics"
        case .openAPI: "/openapi.yaml"
        case .console: "/console/"
        }
    }

    /// The decoded segments of a request for `template`, with sample values for its parameters.
    static func segments(forTemplate template: String) -> [String] {
        let samples = ["{JobId}": jobID, "{CallbackId}": "1", "{token}": "t0k3n", "{SubscriptionId}": subscriptionID, "{DeliveryId}": "7"]
        return template.split(separator: "/").map { samples[String($0)] ?? String($0) }
    }
}

/// The `paths` section of an OpenAPI YAML document, read line by line: path keys at indent 2 and
/// operation keys at indent 4. Enough for a document written in block style, as openapi.yaml is.
private struct DocumentedOperations {
    struct MalformedDocument: Error, CustomStringConvertible {
        var description: String
    }

    private static let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    /// Documented methods by path template, each list in document order.
    var methodsByPath: [String: [HTTPMethod]] = [:]

    init(yaml: String) throws {
        var inPaths = false
        var currentPath: String?
        for rawLine in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(rawLine)
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("#") { continue }
            let indent = line.prefix { $0 == " " }.count
            if indent == 0 {
                inPaths = line == "paths:"
                currentPath = nil
                continue
            }
            guard inPaths, line.hasSuffix(":") else { continue }
            let key = Self.unquoted(line.dropFirst(indent).dropLast())
            if indent == 2 {
                guard key.hasPrefix("/") else { throw MalformedDocument(description: "path key without a leading slash: \(key)") }
                currentPath = key
                methodsByPath[key] = []
            } else if indent == 4, let path = currentPath, Self.methods.contains(key) {
                methodsByPath[path, default: []].append(HTTPMethod(rawValue: key.uppercased()))
            }
        }
        guard !methodsByPath.isEmpty else { throw MalformedDocument(description: "no paths section with methodsByPath") }
    }

    private static func unquoted(_ text: Substring) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.count >= 2, let first = trimmed.first, first == "'" || first == "\"", trimmed.last == first {
            return String(trimmed.dropFirst().dropLast())
        }
        return trimmed
    }
}
