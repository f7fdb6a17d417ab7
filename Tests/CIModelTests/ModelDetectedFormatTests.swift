import CIModel
import Testing

/// The ingest handler detects a body's format once and hands it to the decoder, which must then decode
/// exactly as it does when it detects the format itself.
@Suite struct ModelDetectedFormatTests {
    private static let xml = Array("<Response><JobsDetail><JobId>j1</JobId><State>Success</State></JobsDetail></Response>".utf8)
    private static let json = Array(#"{"JobsDetail":{"JobId":"j1","State":"Success"}}"#.utf8)

    @Test(arguments: [xml, json])
    func decodeCallback_DetectedFormatGiven_DecodesAsWithoutIt(_ body: [UInt8]) throws {
        let detected = CallbackDecoder.detectFormat(body)
        let given = try CallbackDecoder.decodeCallback(body, detectedFormat: detected)
        #expect(given == (try CallbackDecoder.decodeCallback(body)))
        #expect(given.format == detected)
    }

    @Test func decodeCallback_NoFormatDetected_RefusedAsNeitherXMLNorJSON() {
        let body = Array("hello".utf8)
        #expect(CallbackDecoder.detectFormat(body) == nil)
        #expect {
            try CallbackDecoder.decodeCallback(body, detectedFormat: nil)
        } throws: { error in
            (error as? CallbackDecodingError)?.code == .notXMLOrJSON
        }
    }
}
