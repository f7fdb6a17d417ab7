import Foundation
import Testing

@testable import JobStore

/// Stored documents are served as compact JSON, like every other part of a response.
@Suite("jsonb text")
struct JSONBTextTests {
    @Test func compact_PostgresSpacing_IsRemovedOutsideStrings() {
        #expect(JSONBText.compact(#"{"Tag": "x", "JobId": "j1", "List": [1, 2, {"A": null}]}"#) == #"{"Tag":"x","JobId":"j1","List":[1,2,{"A":null}]}"#)
    }

    @Test func compact_SpacesQuotesAndEscapesInsideStrings_AreKept() {
        let text = #"{"Message": "a, b: \"c d\" \\", "Path": "x\\\" y"}"#
        #expect(JSONBText.compact(text) == #"{"Message":"a, b: \"c d\" \\","Path":"x\\\" y"}"#)
    }

    @Test func compact_UnterminatedStringOrTrailingBackslash_IsCopiedToTheEndWithoutReadingPastIt() {
        #expect(JSONBText.compact(#"{"a": "abc"#) == #"{"a":"abc"#)
        #expect(JSONBText.compact(#"{"a": "abc"#) == #"{"a":"abc"#)
        #expect(JSONBText.compact(#"""#) == #"""#)
        #expect(JSONBText.compact("") == "")
    }

    @Test func compact_LargeDocument_ParsesToTheSameValue() throws {
        let jobs = (0..<200).map { index in
            ["JobId": "j\(index)", "Message": "a, b: \"c\" \\ \(index) 水印", "Progress": index, "Nested": ["A": [1, 2, 3]]] as [String: Any]
        }
        let original = try JSONSerialization.data(withJSONObject: ["JobsDetail": jobs], options: [.sortedKeys])
        // jsonb's layout: a space after every ':' and ',' outside strings.
        var spaced = ""
        var inString = false
        var escaped = false
        for character in String(decoding: original, as: UTF8.self) {
            spaced.append(character)
            if inString {
                if escaped { escaped = false } else if character == "\\" { escaped = true } else if character == "\"" { inString = false }
            } else if character == "\"" {
                inString = true
            } else if character == ":" || character == "," {
                spaced.append(" ")
            }
        }
        let compacted = JSONBText.compact(spaced)
        #expect(compacted.utf8.count == original.count)
        let reparsed = try JSONSerialization.jsonObject(with: Data(compacted.utf8)) as? NSDictionary
        let expected = try JSONSerialization.jsonObject(with: original) as? NSDictionary
        #expect(reparsed == expected)
    }
}
