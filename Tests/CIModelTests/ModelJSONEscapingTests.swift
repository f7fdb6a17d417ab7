import Foundation
import Testing

@testable import CIModel

/// The JSON writer's string escaping, which writes every key and string of every response and event: what
/// a client's JSON parser reads back must be the text that went in, and the output must stay safe to embed
/// in JavaScript (U+2028 and U+2029 escaped).
@Suite("JSON escaping")
struct ModelJSONEscapingTests {
    private func escaped(_ text: String) -> String {
        var bytes: [UInt8] = []
        JSONWriter.appendEscaped(text, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func escaping_PlainText_IsCopiedUnchanged() {
        #expect(escaped("") == "")
        #expect(escaped("ExtractDigitalWatermark") == "ExtractDigitalWatermark")
        #expect(escaped("水印 ünïcode 🎬") == "水印 ünïcode 🎬")
    }

    @Test func escaping_QuotesBackslashesAndControls_AreEscapedWhereTheyStand() {
        #expect(escaped(#"a"b\c"#) == #"a\"b\\c"#)
        #expect(escaped("\"") == #"\""#)
        #expect(escaped("line\nnext\r\ttab") == #"line\nnext\r\ttab"#)
        #expect(escaped("\u{0}\u{1}x\u{1F}") == #"\u0000\u0001x\u001f"#)
    }

    @Test func escaping_LineAndParagraphSeparators_AreEscapedForJavaScript() {
        #expect(escaped("a\u{2028}b\u{2029}") == #"a\u2028b\u2029"#)
        // Other characters that start with E2 80 (…, U+2026) and E2 in other positions are left as they are.
        #expect(escaped("…\u{2027}€") == "…\u{2027}€")
    }

    @Test(arguments: [
        "", "plain", "\"quoted\"", "back\\slash", "\u{7}\u{8}\u{B}\u{C}\u{1B}", "mixed \"\\\n\u{2028}\u{2029} 水印 🎬 \u{0}",
        String(repeating: "run of plain bytes ", count: 40) + "\"" + String(repeating: "x", count: 300),
    ])
    func escaping_AnyText_ParsesBackToItself(_ text: String) throws {
        let document = Data(("[\"" + escaped(text) + "\"]").utf8)
        let parsed = try JSONSerialization.jsonObject(with: document) as? [String]
        #expect(parsed == [text])
    }
}
