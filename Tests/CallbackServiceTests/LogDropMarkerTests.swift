import Foundation
import Testing

@testable import CallbackService

/// The line that marks dropped log lines is written by LogOutput itself, so it must follow `LOG_FORMAT`:
/// a JSON log shipper that meets a text line in a JSON stream drops or misfiles it.
@Suite("Dropped-lines marker")
struct LogDropMarkerTests {
    @Test func dropMarker_JSONFormat_IsOneJSONObjectLineNamingTheCount() throws {
        let line = LogOutput.droppedMarker(42, format: .json)
        #expect(line.last == 0x0A)
        #expect(line.dropLast().contains(0x0A) == false, "one line")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.dropLast())) as? [String: Any])
        #expect(object["level"] as? String == "warning")
        #expect(object["message"] as? String == "log lines dropped")
        #expect(object["log.dropped_lines"] as? String == "42")
        #expect(object["time"] is String)
    }

    @Test func dropMarker_TextFormat_EndsWithTheCountAndPhrase() {
        let line = String(decoding: LogOutput.droppedMarker(7, format: .text), as: UTF8.self)
        #expect(line.hasSuffix(" 7 log lines dropped\n"))
        #expect(line.contains(" warning ci-callbackd : log.dropped_lines=7 "))
    }
}
