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
}
