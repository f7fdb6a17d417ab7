import CIModel
import Foundation
import Testing

// The store's round trip: decode → normalized → CINodeJSON.encode → jsonb (simulated) →
// CINodeJSON.decode → CINodeXML.encode, plus the encoders' exact output.

/// Re-serialises JSON text the way PostgreSQL's jsonb prints it: keys ordered by length, then
/// bytewise; `": "` and `", "` separators. Uses Foundation's parser, independent of CIModel's.
private func jsonbText(_ json: String) throws -> String {
    let object = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
    return try render(object)
}

private struct UnexpectedJSON: Error {}

private func render(_ value: Any) throws -> String {
    switch value {
    case let string as String:
        let data = try JSONSerialization.data(withJSONObject: string, options: [.fragmentsAllowed, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    case let array as [Any]:
        return "[" + (try array.map(render)).joined(separator: ", ") + "]"
    case let object as [String: Any]:
        let keys = object.keys.sorted { a, b in
            a.utf8.count != b.utf8.count ? a.utf8.count < b.utf8.count : Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
        }
        return "{" + (try keys.map { try render($0) + ": " + render(object[$0]!) }).joined(separator: ", ") + "}"
    default:
        throw UnexpectedJSON()
    }
}

/// Fields sorted by name (stable, so repeated siblings keep their order), recursively: the
/// order-insensitive reading of a tree.
private func canonical(_ node: CINode) -> CINode {
    switch node {
    case .text: return node
    case .element(let fields):
        let sorted = fields.enumerated().sorted { $0.element.name != $1.element.name ? $0.element.name < $1.element.name : $0.offset < $1.offset }
        return .element(sorted.map { CIField(name: $0.element.name, value: canonical($0.element.value)) })
    }
}

private func vector(_ name: String) throws -> [UInt8] {
    let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/ci-vectors").path
    let data = try #require(FileManager.default.contents(atPath: directory + "/" + name), "vector \(directory)/\(name) is missing")
    return [UInt8](data)
}

@Test(arguments: ["xml-workflow-snapshot.xml", "xml-extract-nonascii.xml", "xml-go-sdk-example-workflow-superresolution.xml"])
func roundTrip_NormalizedThroughJSONBAndBackToXML_KeepsEveryField(vectorName: String) throws {
    let original = try #require(try CallbackDecoder.decode(vector(vectorName)).jobs.first)

    let json = CINodeJSON.encode(original.normalized)
    let stored = try jsonbText(json)
    #expect(stored != json)  // the simulation really reorders and re-spaces
    let restored = try CINodeJSON.decode(Array(stored.utf8))
    #expect(canonical(restored) == canonical(original.normalized))

    let xml = CINodeXML.encode(restored, rootName: "JobsDetail")
    #expect(!xml.contains("\n"))
    let reparsed = try CINodeXML.decode(Array(xml.utf8))
    #expect(reparsed.name == "JobsDetail")
    #expect(canonical(reparsed.value) == canonical(original.normalized))

    // The XML, wrapped as a callback again, reads as the same job (times already RFC 3339).
    let again = try #require(try CallbackDecoder.decode(Array("<Response>\(xml)</Response>".utf8)).jobs.first)
    var expected = original
    expected.normalized = again.normalized
    #expect(again == expected)
    #expect(canonical(again.normalized) == canonical(original.normalized))
}

@Test func roundTrip_JSONVectorThroughJSONB_KeepsEveryField() throws {
    let original = try #require(try CallbackDecoder.decode(vector("json-workflow-snapshot-array.json")).jobs.first)
    let restored = try CINodeJSON.decode(Array(try jsonbText(CINodeJSON.encode(original.normalized)).utf8))
    #expect(canonical(restored) == canonical(original.normalized))
}

@Test func nodeJSON_EncodesCompactDeterministicJSON() {
    let node = CINode.element([
        CIField(name: "b", value: .text("1")),
        CIField(name: "a", value: .text("x")),
        CIField(name: "Empty", value: .text("")),
        CIField(name: "a", value: .element([CIField(name: "k", value: .text("v"))])),
        CIField(name: "CosHeaders", value: .element([CIField(name: "Key", value: .text("k"))])),
        CIField(name: "Obj", value: .element([])),
        CIField(name: "Esc", value: .text("\"\\/\n\r\t\u{08}\u{0C}\u{01}\u{1F} é 腾 😀")),
    ])
    let expected = #"{"b":"1","a":["x",{"k":"v"}],"Empty":"","CosHeaders":[{"Key":"k"}],"Obj":{},"Esc":"\"\\/\n\r\t\b\f\u0001\u001f é 腾 😀"}"#
    #expect(CINodeJSON.encode(node) == expected)
    #expect(CINodeJSON.encode(node) == CINodeJSON.encode(node))
    #expect(CINodeJSON.encode(node, arrayNames: []).contains(#""CosHeaders":{"Key":"k"}"#))
    #expect(CINodeJSON.encode(.text("t")) == #""t""#)
}

@Test func nodeJSON_DecodeOfEncode_IsTheIdentityForJSONShapedTrees() throws {
    let node = CINode.element([
        CIField(name: "x", value: .text("1")),
        CIField(name: "y", value: .element([CIField(name: "z", value: .text("\u{01}\"")), CIField(name: "z", value: .text(""))])),
        CIField(name: "w", value: .element([])),
    ])
    #expect(try CINodeJSON.decode(Array(CINodeJSON.encode(node).utf8)) == node)
}

@Test func nodeJSON_GroupsRepeatedNamesInLargeObjects() throws {
    var fields: [CIField] = []
    for i in 0..<100 {
        fields.append(CIField(name: "k\(i % 10)", value: .text("\(i)")))
    }
    let node = CINode.element(fields)
    let restored = try CINodeJSON.decode(Array(CINodeJSON.encode(node).utf8))
    #expect(restored.fields.map(\.name).prefix(10) == ["k0", "k0", "k0", "k0", "k0", "k0", "k0", "k0", "k0", "k0"])
    #expect(canonical(restored) == canonical(node))
}

@Test func nodeXML_EncodesOneEscapedLine() {
    let node = CINode.element([
        CIField(name: "Message", value: .text("a & b <c> \"d\" 'e' 腾讯\r\n")),
        CIField(name: "Empty", value: .text("")),
        CIField(name: "Obj", value: .element([])),
        CIField(name: "Tag", value: .text("x")),
        CIField(name: "Tag", value: .text("y")),
        CIField(name: "Bad\u{01}", value: .text("\u{01}\u{FFFE}ok\u{FFFD}")),
        CIField(name: "1 a:b", value: .text("n")),
        CIField(name: "", value: .text("e")),
    ])
    let expected =
        "<JobsDetail><Message>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos; 腾讯&#13;\n</Message><Empty/><Obj/>"
        + "<Tag>x</Tag><Tag>y</Tag><Bad_>\u{FFFD}\u{FFFD}ok\u{FFFD}</Bad_><_1_a_b>n</_1_a_b><_>e</_></JobsDetail>"
    #expect(CINodeXML.encode(node, rootName: "JobsDetail") == expected)
}

@Test func nodeXML_OutputParsesBackToTheSameTree() throws {
    let node = CINode.element([
        CIField(name: "Message", value: .text("a & b <c> \"d\" 'e' 腾讯\r\n\t x ")),
        CIField(name: "Tag", value: .element([CIField(name: "In", value: .text("]]>"))])),
    ])
    let parsed = try CINodeXML.decode(Array(CINodeXML.encode(node, rootName: "R").utf8))
    #expect(parsed == CIField(name: "R", value: node))
}

@Test func node_AccessorsReadFirstAllTextAndPaths() {
    let node = CINode.element([
        CIField(name: "A", value: .text("1")),
        CIField(name: "B", value: .element([CIField(name: "C", value: .text("deep"))])),
        CIField(name: "A", value: .text("2")),
    ])
    #expect(node["A"] == .text("1"))
    #expect(node.all("A") == [.text("1"), .text("2")])
    #expect(node.all("Z").isEmpty)
    #expect(node["Z"] == nil)
    #expect(node[path: "B", "C"]?.text == "deep")
    #expect(node[path: "B", "Z"] == nil)
    #expect(node.node(atPath: []) == node)
    #expect(node.text == nil)
    #expect(node["B"]?.fields.count == 1)
    #expect(CINode.text("t").fields.isEmpty)
    #expect(CINode.text("t")["A"] == nil)
    #expect(CINode.element([]).text == "")
}
