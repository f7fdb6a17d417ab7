import CallbackService
import Foundation
import HTTPListener
import HTTPWire
import JobStore
import Logging
import PostgresLibPQ
import Synchronization
import TestSupport
import Testing

/// Every refusal the listener makes reaches the application: answered with the service's JSON error body
/// and a request id, counted in `http_listener_refusals_total{reason,status}`, and logged.
@Suite("Listener refusals")
struct ListenerRefusalTests {
    /// One kind of refusal: how to provoke it, and what it must look like.
    enum Kind: String, CaseIterable, Sendable {
        case malformed, uriTooLong, headersTooLarge, bodyTooLarge, expectationFailed, unsupportedTransferCoding
        case versionNotSupported, requestTimeout, bodyBudget, admissionToken, admissionAddress

        var reason: HTTPRefusal.Reason {
            switch self {
            case .malformed: .malformed
            case .uriTooLong: .uriTooLong
            case .headersTooLarge: .headersTooLarge
            case .bodyTooLarge: .bodyTooLarge
            case .expectationFailed: .expectationFailed
            case .unsupportedTransferCoding: .unsupportedTransferCoding
            case .versionNotSupported: .versionNotSupported
            case .requestTimeout: .requestTimeout
            case .bodyBudget: .bodyBudget
            case .admissionToken, .admissionAddress: .admission
            }
        }

        var status: Int {
            switch self {
            case .malformed: 400
            case .uriTooLong: 414
            case .headersTooLarge: 431
            case .bodyTooLarge: 413
            case .expectationFailed: 417
            case .unsupportedTransferCoding: 501
            case .versionNotSupported: 505
            case .requestTimeout: 408
            case .bodyBudget: 503
            case .admissionToken: 401
            case .admissionAddress: 403
            }
        }

        var code: String {
            switch self {
            case .malformed: "BadRequest"
            case .uriTooLong: "URITooLong"
            case .headersTooLarge: "HeaderFieldsTooLarge"
            case .bodyTooLarge: "PayloadTooLarge"
            case .expectationFailed: "ExpectationFailed"
            case .unsupportedTransferCoding: "NotImplemented"
            case .versionNotSupported: "HTTPVersionNotSupported"
            case .requestTimeout: "RequestTimeout"
            case .bodyBudget: "TooManyBodiesInFlight"
            case .admissionToken: "Unauthorized"
            case .admissionAddress: "Forbidden"
            }
        }

        /// What the client sends (the request-timeout case sends part of a head and waits).
        var request: String {
            switch self {
            case .malformed: "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            case .uriTooLong: "GET /\(String(repeating: "a", count: 2000)) HTTP/1.1\r\nHost: t\r\n\r\n"
            case .headersTooLarge: "GET / HTTP/1.1\r\nHost: t\r\nX-Big: \(String(repeating: "v", count: 2000))\r\n\r\n"
            case .bodyTooLarge: "POST /v1/callbacks HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
            case .expectationFailed: "POST /v1/callbacks HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}"
            case .unsupportedTransferCoding: "POST /v1/callbacks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            case .versionNotSupported: "GET / HTTP/2.0\r\nHost: t\r\n\r\n"
            case .requestTimeout: "GET /healthz HTTP/1.1\r\nHost: t\r\n"
            case .bodyBudget: "POST /v1/callbacks HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n"
            case .admissionToken: "POST /v1/callbacks/wrong HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n"
            case .admissionAddress: "POST /v1/callbacks/right HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n"
            }
        }

        var accessPolicy: AccessPolicy {
            switch self {
            case .admissionToken: AccessPolicy(callbackTokens: ["right"])
            case .admissionAddress: AccessPolicy(callbackTokens: ["right"], callbackAllowList: [IPAddressRange("10.0.0.0/8")!])
            default: AccessPolicy()
            }
        }
    }

    @Test(arguments: Kind.allCases)
    func refusal_IsAnsweredInTheServiceErrorShape_CountedAndLogged(kind: Kind) async throws {
        try await RefusalTestService.with(accessPolicy: kind.accessPolicy) { service in
            let response = try await listenerBlocking {
                let client = try ListenerTestClient(port: service.port, receiveTimeout: 10)
                try client.send(kind.request)
                let response = try client.readResponse()
                #expect(try client.readsEOF(), "the connection closes after the refusal")
                return response
            }
            expectServiceError(response, status: kind.status, code: kind.code)
            if kind == .bodyBudget { #expect(response.headers["Retry-After"] == "1") }
            #expect(try await service.counter(reason: kind.reason.rawValue, status: "\(kind.status)") == 1)
            let line = try #require(service.refusalLines().first, "no refusal was logged")
            #expect(line["http.refusal"] == kind.reason.rawValue)
            #expect(line["http.status"] == "\(kind.status)")
            #expect(line["request.id"] == response.headers["X-Request-Id"])
        }
    }

    @Test func refusal_AtCapacity_IsAnsweredCountedAndLogged() async throws {
        try await RefusalTestService.with(configure: { $0.maxConnections = 1 }) { service in
            // The one place is busy (an idle connection would be evicted to make room instead).
            let held = try await listenerBlocking {
                let held = try ListenerTestClient(port: service.port)
                try held.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
                return held
            }
            #expect(try await eventually { service.hold.entered.load(ordering: .relaxed) == 1 })
            let response = try await listenerBlocking {
                let refused = try ListenerTestClient(port: service.port)
                let response = try refused.readResponse()
                #expect(try refused.readsEOF())
                return response
            }
            service.hold.released.store(true, ordering: .relaxed)
            _ = try await listenerBlocking { try held.readResponse() }
            expectServiceError(response, status: 503, code: "TooManyConnections")
            #expect(response.headers["Retry-After"] == "1")
            #expect(try await service.counter(reason: "at_capacity", status: "503") == 1)
            let line = try #require(service.refusalLines().first)
            #expect(line["http.refusal"] == "at_capacity")
            #expect(line["level"] == "warning")
        }
    }

    @Test func refusal_AtCapacityBeyondTheRefusingConnections_ClosesUnansweredCountedAndLogged() async throws {
        try await RefusalTestService.with(configure: {
            $0.maxConnections = 1
            $0.maxRefusingConnections = 1
        }) { service in
            let held = try await listenerBlocking {
                let held = try ListenerTestClient(port: service.port)
                try held.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
                return held
            }
            #expect(try await eventually { service.hold.entered.load(ordering: .relaxed) == 1 })
            defer { service.hold.released.store(true, ordering: .relaxed) }
            let unanswered = try await listenerBlocking {
                // Refused connections are held (lingering) while their client keeps them open; with room to
                // refuse one at a time, one of the next few is closed without an answer.
                var kept: [ListenerTestClient] = []
                for _ in 0..<20 {
                    let client = try ListenerTestClient(port: service.port)
                    kept.append(client)
                    if try client.readsEOF() { return true }
                }
                return false
            }
            #expect(unanswered)
            #expect(try await service.counter(reason: "at_capacity_unanswered", status: "none") >= 1)
            #expect(service.refusalLines().contains { $0["http.refusal"] == "at_capacity_unanswered" && $0["http.status"] == "none" })
        }
    }

    @Test func refusal_Flood_IsCountedWholeButLoggedOnlyUpToTheBurst() async throws {
        try await RefusalTestService.with { service in
            try await listenerBlocking {
                for _ in 0..<30 {
                    let client = try ListenerTestClient(port: service.port)
                    try client.send(Kind.malformed.request)
                    #expect(try client.readResponse().status == 400)
                }
            }
            #expect(try await service.counter(reason: "malformed", status: "400") == 30)
            // The last refusal's line may still be on its way when the 30th answer arrives; none beyond the burst.
            #expect(try await eventually { service.refusalLines().count == 10 })
            #expect(service.refusalLines().count == 10)
        }
    }
}

/// A listener answered by the real application's hooks; its store points at nothing, since no request
/// here reaches the database. Log lines are kept as JSON objects.
private struct RefusalTestService: Sendable {
    /// The service's log, as JSON objects.
    final class LogLines: Sendable {
        let lines = Mutex<[[String: String]]>([])
    }

    /// Requests to `/hold` wait (at most 10 s) until `released`: they keep a connection busy, so that it
    /// cannot be evicted to make room.
    final class Hold: Sendable {
        let entered = Atomic<Int>(0)
        let released = Atomic<Bool>(false)

        func wait() async {
            entered.add(1, ordering: .relaxed)
            _ = try? await eventually(within: .seconds(10), every: .milliseconds(5)) { self.released.load(ordering: .relaxed) }
        }
    }

    let port: Int
    let application: CallbackApplication
    let log: LogLines
    let hold: Hold

    static func with(
        accessPolicy: AccessPolicy = AccessPolicy(), configure: (inout ListenerLimits) -> Void = { _ in },
        _ body: (RefusalTestService) async throws -> Void
    ) async throws {
        let log = LogLines()
        let logger = Logger(label: "refusals") { label in
            ServiceLogHandler(label: label, format: .json) { line in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { return }
                log.lines.withLock { $0.append(object.compactMapValues { $0 as? String }) }
            }
        }
        var poolConfiguration = PostgresPool.Configuration(conninfo: "postgresql://postgres@127.0.0.1:1/none")
        poolConfiguration.size = 1
        let pool = PostgresPool(configuration: poolConfiguration, logger: Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() })
        let application = CallbackApplication(
            store: JobStore(pool: pool, logger: logger), configuration: .init(requiredSchemaVersion: 1, accessPolicy: accessPolicy),
            logger: logger)
        var configuration = HTTPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.eventLoopCount = 1
        configuration.limits.parser = HTTPParserLimits(maxHeaderBytes: 1024, maxBodyBytes: 10_000)
        configuration.limits.requestReadTimeout = .milliseconds(300)
        configuration.limits.maxInflightBodyBytes = 1000
        configure(&configuration.limits)
        let hold = Hold()
        let server = HTTPServer(
            configuration: configuration, logger: logger, hooks: application.listenerHooks,
            responder: { request in
                if request.path == "/hold" { await hold.wait() }
                return await application.respond(to: request)
            })
        let run = Task { try await server.run() }
        do {
            let port = try await server.waitUntilListening()
            try await body(RefusalTestService(port: port, application: application, log: log, hold: hold))
        } catch {
            run.cancel()
            _ = try? await run.value
            await pool.close()
            throw error
        }
        run.cancel()
        try await run.value
        await pool.close()
    }

    /// The value of `http_listener_refusals_total{reason,status}` on `/metrics` (0 when absent).
    func counter(reason: String, status: String) async throws -> Int {
        let page = await application.respond(to: HTTPRequest(method: .get, target: "/metrics"))
        let prefix = #"http_listener_refusals_total{reason="\#(reason)",status="\#(status)"} "#
        let text = String(decoding: page.body, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return 0 }
        return try #require(Int(line.dropFirst(prefix.count)))
    }

    /// The `http request refused` lines logged so far.
    func refusalLines() -> [[String: String]] {
        log.lines.withLock { $0 }.filter { $0["message"] == "http request refused" }
    }
}

/// A refusal in the service's error shape: `{"Error":{"Code","Message","RequestId"}}`, the id also in
/// `X-Request-Id`, and the connection closing after it.
private func expectServiceError(_ response: ListenerTestResponse, status: Int, code: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(response.status == status, sourceLocation: sourceLocation)
    #expect(response.headers["Content-Type"] == "application/json", sourceLocation: sourceLocation)
    #expect(response.headers["Connection"] == "close", sourceLocation: sourceLocation)
    let json = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
    let error = json?["Error"] as? [String: Any]
    #expect(error?["Code"] as? String == code, "body: \(response.bodyText)", sourceLocation: sourceLocation)
    #expect((error?["Message"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
    let requestID = error?["RequestId"] as? String ?? ""
    #expect(requestID.count == 16 && requestID.allSatisfy(\.isHexDigit), "RequestId \(requestID)", sourceLocation: sourceLocation)
    #expect(response.headers["X-Request-Id"] == requestID, sourceLocation: sourceLocation)
}
