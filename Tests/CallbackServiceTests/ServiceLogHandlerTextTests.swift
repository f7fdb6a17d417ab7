import Logging
import Synchronization
import Testing

@testable import CallbackService

@Suite("Text logs")
struct ServiceLogHandlerTextTests {
    @Test func eachEvent_isOneLineInStreamLogHandlerLayout_withSortedFieldsAndUTCTime() throws {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "test") { label in
            ServiceLogHandler(label: label, format: .text) { line in lines.withLock { $0.append(String(decoding: line, as: UTF8.self)) } }
        }
        logger[metadataKey: "request.id"] = "r1"
        logger[metadataKey: "shadowed"] = "handler"
        logger.info("request", metadata: ["http.status": "200", "shadowed": "event"])
        logger.debug("hidden")

        let captured = lines.withLock { $0 }
        #expect(captured.count == 1, "debug is below the default info level")
        let line = try #require(captured.first)
        // 2026-11-25T12:27:20.123Z info test : http.status=200 request.id=r1 shadowed=event [CallbackServiceTests] request
        let time = try #require(line.split(separator: " ").first)
        #expect(time.count == 24 && time.hasSuffix("Z") && time.dropFirst(10).first == "T", "RFC 3339 UTC with milliseconds: \(time)")
        #expect(line.dropFirst(25) == "info test : http.status=200 request.id=r1 shadowed=event [CallbackServiceTests] request\n")
    }

    @Test func timestamp_isRFC3339UTCWithMilliseconds() throws {
        let stamp = LogTimestamp.now()
        let pattern = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/
        #expect(try pattern.wholeMatch(in: stamp) != nil, "\(stamp)")
    }
}
