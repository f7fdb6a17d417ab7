import CIModel
import Testing

// The store keeps each JobsDetail as CINodeJSON and the XML lookup reads it back with CINodeJSON.decode.
// Whatever the decoder accepted must read back: CINodeJSON writes a group of repeated names as an
// array, one more level of nesting and one more value than the XML had (found by fuzz-callback-decoder's
// "stored JSON reads back" invariant).

private func storedJSONReadsBack(_ body: String) throws -> CINode {
    let envelope = try CallbackDecoder.decode(Array(body.utf8))
    let job = try #require(envelope.jobs.first)
    let stored = CINodeJSON.encode(job.normalized)
    return try CINodeJSON.decode(Array(stored.utf8))
}

@Test func storedJSON_DeepXMLWithRepeatedNames_ReadsBack() throws {
    // 60 levels, each with two <b> siblings: 62 deep in XML (within the default 64), 121 in JSON.
    var inner = "<x>1</x>"
    for _ in 0..<60 { inner = "<b/><b>" + inner + "</b>" }
    let body = "<Response><JobsDetail><JobId>j1</JobId><State>Success</State>\(inner)</JobsDetail></Response>"
    let node = try storedJSONReadsBack(body)
    #expect(node["JobId"]?.text == "j1")
    var level = node
    for _ in 0..<60 { level = try #require(level.all("b").last) }
    #expect(level["x"]?.text == "1")
}

@Test func storedJSON_ManyRepeatedSiblingPairs_ReadsBack() throws {
    // 90,000 elements in pairs of distinct names: within the default 100,000 elements, but the stored
    // JSON adds one array per pair (135,000 values).
    var inner = ""
    inner.reserveCapacity(900_000)
    for k in 0..<45_000 {
        let name = "n" + String(k, radix: 36)
        inner += "<\(name)/><\(name)/>"
    }
    let body = "<Response><JobsDetail><JobId>j1</JobId><State>Success</State>\(inner)</JobsDetail></Response>"
    let node = try storedJSONReadsBack(body)
    #expect(node.fields.count == 90_002)
}
