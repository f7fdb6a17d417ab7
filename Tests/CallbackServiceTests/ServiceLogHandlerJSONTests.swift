import Foundation
import Logging
import Synchronization
import Testing

@testable import CallbackService

@Suite("JSON logs")
struct ServiceLogHandlerJSONTests {
    @Test func eachEvent_isOneJSONObjectLine_withMetadataAsFields() throws {
        let lines = Mutex<[[UInt8]]>([])
        var logger = Logger(label: "test") { label in
            ServiceLogHandler(label: label, format: .json) { line in lines.withLock { $0.append(line) } }
        }
        logger[metadataKey: "request.id"] = "r1"
        logger.info("request", metadata: ["http.status": "200", "list": ["a", "b"], "message": "spoof"])
        logger.debug("hidden")

        let captured = lines.withLock { $0 }
        #expect(captured.count == 1, "debug is below the default info level")
        let line = try #require(captured.first)
        #expect(line.last == 0x0A)
        #expect(!line.dropLast().contains(0x0A), "one line per event")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        #expect(object["message"] as? String == "request", "metadata cannot override the fixed fields")
        #expect(object["level"] as? String == "info")
        #expect(object["label"] as? String == "test")
        #expect(object["request.id"] as? String == "r1")
        #expect(object["http.status"] as? String == "200")
        #expect(object["list"] as? [String] == ["a", "b"])
        #expect((object["time"] as? String)?.hasSuffix("Z") == true)
    }
}
