import CIModel
import Testing

// Bodies that must be refused, each with its exact reason.

private func failure(_ body: [UInt8], limits: CIDecodingLimits = .init()) -> CallbackDecodingError? {
    do {
        _ = try CallbackDecoder.decode(body, limits: limits)
        return nil
    } catch {
        return error
    }
}

private func failure(_ body: String, limits: CIDecodingLimits = .init()) -> CallbackDecodingError? {
    failure(Array(body.utf8), limits: limits)
}

/// Byte offset of the first `needle` in `body` (the tests compute offsets rather than hard-code them).
private func offset(of needle: String, in body: String) throws -> Int {
    let haystack = Array(body.utf8)
    let pattern = Array(needle.utf8)
    for start in 0...(haystack.count - pattern.count) where Array(haystack[start..<(start + pattern.count)]) == pattern {
        return start
    }
    throw NotFound()
}

private struct NotFound: Error {}

// MARK: Neither format

@Test(arguments: ["", "   \r\n\t ", "hello", "[{\"JobId\":\"j\"}]", "\u{FEFF}", "\u{FEFF}  "])
func reject_BodyThatIsNeitherXMLNorJSON(body: String) {
    let error = failure(body)
    #expect(error?.reason == "body is neither XML nor JSON")
    #expect(error?.code == .notXMLOrJSON)
    #expect(CallbackDecoder.detectFormat(Array(body.utf8)) == nil)
}

// MARK: Malformed XML

@Test func reject_XMLMismatchedEndTag_NamesTheExpectedTagAndOffset() throws {
    let body = "<Response><JobsDetail><Code>Success</Cod></JobsDetail></Response>"
    let error = try #require(failure(body))
    #expect(error.reason == "expected </Code> at byte \(try offset(of: "</Cod>", in: body)), found </Cod>")
    #expect(error.code == .malformedXML)
}

@Test func reject_XMLUnclosedElement_AtEndOfInput() {
    let body = "<Response><EventName>TaskFinish</EventName>"
    #expect(failure(body)?.reason == "expected </Response> at byte \(body.utf8.count), found end of input")
}

@Test func reject_XMLGarbageAfterRoot() throws {
    let body = "<Response></Response>\n<Response/>"
    #expect(failure(body)?.reason == "garbage after root element at byte \(try offset(of: "<Response/>", in: body))")
    #expect(failure("<Response/>trailing")?.reason == "garbage after root element at byte 11")
}

@Test func reject_XMLDoctypeWithEntityDeclarations_BillionLaughs() {
    let body = """
        <?xml version="1.0"?>
        <!DOCTYPE lolz [
          <!ENTITY lol "lol">
          <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
          <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
        ]>
        <Response><JobsDetail><JobId>&lol3;</JobId><State>Success</State></JobsDetail></Response>
        """
    let error = failure(body)
    #expect(error?.reason == "DOCTYPE with entity declarations is not accepted (at byte 22)")
    #expect(error?.code == .forbiddenDTD)
}

@Test func reject_XMLDoctypeWithInternalSubsetWithoutEntities() {
    let error = failure("<!DOCTYPE Response [ <!ELEMENT Response ANY> ]><Response/>")
    #expect(error?.reason == "DOCTYPE with an internal subset is not accepted (at byte 0)")
    #expect(error?.code == .forbiddenDTD)
}

@Test func reject_XMLUndefinedEntity() throws {
    let body = "<Response><EventName>a&foo;b</EventName></Response>"
    #expect(failure(body)?.reason == "undefined entity &foo; at byte \(try offset(of: "&foo;", in: body))")
}

@Test(arguments: [
    ("<R>&#0;</R>", "character reference to an invalid code point at byte 3"),
    ("<R>&#xD800;</R>", "character reference to an invalid code point at byte 3"),
    ("<R>&#x110000;</R>", "character reference to an invalid code point at byte 3"),
    ("<R>&#99999999999999999999;</R>", "character reference to an invalid code point at byte 3"),
    ("<R>&#X41;</R>", "malformed character reference at byte 3"),
    ("<R>&#;</R>", "malformed character reference at byte 3"),
    ("<R>a & b</R>", "malformed entity reference at byte 5"),
    ("<R>&amp</R>", "malformed entity reference at byte 3"),
])
func reject_XMLBadReferences(body: String, reason: String) {
    #expect(failure(body)?.reason == reason)
}

@Test(arguments: [
    ("<R><A>x</A>y</R>", "text beside child elements of <R> at byte 11 is not supported"),
    ("<R>y<A>x</A></R>", "text beside child elements of <R> at byte 3 is not supported"),
    ("<R a=\"1\" a=\"2\"/>", "duplicate attribute at byte 9"),
    ("<R a=1/>", "expected a quoted attribute value at byte 5"),
    ("<R a=\"<\"/>", "'<' in attribute value at byte 6"),
    ("<R><!-- a -- b --></R>", "'--' inside a comment at byte 10"),
    ("<R>]]></R>", "']]>' is not allowed in text at byte 3"),
    ("<R><?xml version=\"1.0\"?></R>", "XML declaration is only allowed at the start, found at byte 3"),
    ("<R><![CDATA[x</R>", "unterminated CDATA section at byte 3"),
    ("<R>\u{01}</R>", "control character U+0001 is not allowed in XML at byte 3"),
    ("<R>< A/></R>", "'<' not followed by a name at byte 3"),
    ("<R><!DOCTYPE R></R>", "unexpected markup at byte 3"),
    ("<R", "unterminated start tag <R> at byte 0"),
    ("<!-- only a comment -->", "no root element"),
])
func reject_XMLOtherMalformations(body: String, reason: String) {
    #expect(failure(body)?.reason == reason)
}

@Test func reject_XMLDeeperThanTheLimit() throws {
    let depth = 65
    let body = String(repeating: "<A>", count: depth) + String(repeating: "</A>", count: depth)
    let error = try #require(failure(body))
    #expect(error.reason == "nesting depth exceeds 64 at byte 192")
    #expect(error.code == .limitExceeded)
    let ok = String(repeating: "<A>", count: 64) + String(repeating: "</A>", count: 64)
    #expect(failure(ok) == nil)
}

@Test func reject_XMLMoreElementsThanTheLimit() {
    let body = "<R>" + String(repeating: "<A/>", count: 10) + "</R>"
    #expect(failure(body, limits: CIDecodingLimits(maxElements: 10))?.reason == "more than 10 elements at byte 39")
    #expect(failure(body, limits: CIDecodingLimits(maxElements: 11)) == nil)
}

// MARK: Malformed JSON

@Test(arguments: [
    (#"{"a":"b",}"#, "trailing comma at byte 8"),
    (#"{"a":["b",]}"#, "trailing comma at byte 9"),
    (#"{"a":"\x"}"#, "invalid escape at byte 6"),
    (#"{"a":"\u12G4"}"#, #"invalid \u escape at byte 6"#),
    (#"{"a":"\uD83D"}"#, #"lone surrogate \uD83D at byte 6"#),
    (#"{"a":"\uD83Dx"}"#, #"lone surrogate \uD83D at byte 6"#),
    (#"{"a":"\uD83D\u0041"}"#, #"lone surrogate \uD83D at byte 6"#),
    (#"{"a":"\uDE00"}"#, #"lone surrogate \uDE00 at byte 6"#),
    (#"{"a":"\u0000"}"#, #"\u0000 is not accepted at byte 6"#),
    ("{\"a\":\"x\ty\"}", "control character in string at byte 7"),
    (#"{"a":01}"#, "malformed number at byte 5"),
    (#"{"a":1.}"#, "malformed number at byte 5"),
    (#"{"a":-}"#, "malformed number at byte 5"),
    (#"{"a":+1}"#, "unexpected character at byte 5"),
    (#"{"a":tru}"#, "unexpected character at byte 5"),
    (#"{"a":'b'}"#, "unexpected character at byte 5"),
    (#"{a:"b"}"#, "expected a string key at byte 1"),
    (#"{"a" "b"}"#, "expected ':' at byte 5"),
    (#"{"a":"b" "c":"d"}"#, "expected ',' or '}' at byte 9"),
    (#"{"a":"b"}x"#, "unexpected data after the JSON value at byte 9"),
    (#"{"a":"b"}{}"#, "unexpected data after the JSON value at byte 9"),
    (#"{"a":"b"#, "unterminated string at byte 5"),
    (#"{"a":["#, "unexpected end of input at byte 6"),
])
func reject_MalformedJSON(body: String, reason: String) {
    let error = failure(body)
    #expect(error?.reason == reason)
    #expect(error?.code == .malformedJSON)
}

@Test func reject_JSONDeeperThanTheLimit() throws {
    // The top-level object is depth 1; 64 more levels take it past the limit.
    let body = String(repeating: #"{"a":"#, count: 64) + "{}" + String(repeating: "}", count: 64)
    let error = try #require(failure(body))
    #expect(error.reason == "nesting depth exceeds 64 at byte 320")
    #expect(error.code == .limitExceeded)
    let ok = String(repeating: #"{"a":"#, count: 63) + "{}" + String(repeating: "}", count: 63)
    #expect(failure(ok) == nil)
    let arrays = "{\"a\":" + String(repeating: "[", count: 64) + String(repeating: "]", count: 64) + "}"
    #expect(failure(arrays)?.reason == "nesting depth exceeds 64 at byte 68")
}

@Test func reject_NodeJSONTopLevelThatIsNotAnObject() {
    #expect(throws: CallbackDecodingError(code: .malformedJSON, reason: "top-level JSON value is not an object at byte 0")) {
        try CINodeJSON.decode(Array(#"["a"]"#.utf8))
    }
}

// MARK: Invalid UTF-8

@Test(
    arguments: [
        ([0xFF], 0),
        ([0xC0, 0x80], 0),  // overlong NUL
        ([0xED, 0xA0, 0x80], 0),  // encoded surrogate
        ([0xF4, 0x90, 0x80, 0x80], 0),  // above U+10FFFF
        ([0xE8, 0x85], 0),  // truncated
    ] as [([UInt8], Int)]
)
func reject_InvalidUTF8InXMLAndJSON(bad: [UInt8], index: Int) {
    let xmlPrefix = Array("<R>".utf8)
    let xml = xmlPrefix + bad + Array("</R>".utf8)
    let xmlError = failure(xml)
    #expect(xmlError?.reason == "invalid UTF-8 at byte \(xmlPrefix.count + index)")
    #expect(xmlError?.code == .invalidUTF8)
    let jsonPrefix = Array(#"{"a":""#.utf8)
    let json = jsonPrefix + bad + Array(#""}"#.utf8)
    #expect(failure(json)?.reason == "invalid UTF-8 at byte \(jsonPrefix.count + index)")
}

// MARK: Missing JobId / State

@Test func reject_JobsDetailWithoutJobId_NamesItsIndex() {
    let body = "<Response><JobsDetail><State>Success</State></JobsDetail></Response>"
    let error = failure(body)
    #expect(error?.reason == "JobsDetail[0] has no JobId")
    #expect(error?.code == .missingField)
}

@Test func reject_SecondJobsDetailWithoutState_NamesItsIndex() {
    let body = #"{"JobsDetail":[{"JobId":"a","State":"Success"},{"JobId":"b"}]}"#
    #expect(failure(body)?.reason == "JobsDetail[1] has no State")
}

@Test(arguments: [
    ("<Response><JobsDetail><JobId/><State>Success</State></JobsDetail></Response>", "JobsDetail[0] has no JobId"),
    ("<Response><JobsDetail><JobId></JobId><State>Success</State></JobsDetail></Response>", "JobsDetail[0] has no JobId"),
    (#"{"JobsDetail":{"JobId":"","State":"Success"}}"#, "JobsDetail[0] has no JobId"),
    (#"{"JobsDetail":{"JobId":null,"State":"Success"}}"#, "JobsDetail[0] has no JobId"),
    (#"{"JobsDetail":{"JobId":"j","State":" "}}"#, "JobsDetail[0] has no State"),
    (#"{"JobsDetail":{"JobId":{"x":"y"},"State":"Success"}}"#, "JobsDetail[0] has no JobId"),
    (#"{"JobsDetail":""}"#, "JobsDetail[0] has no JobId"),
])
func reject_EmptyJobIdOrStateCountsAsMissing(body: String, reason: String) {
    #expect(failure(body)?.reason == reason)
}

@Test func reject_DescriptionCarriesCodeAndReasonOnly() {
    let error = CallbackDecodingError(code: .missingField, reason: "JobsDetail[0] has no JobId")
    #expect(error.description == "CallbackDecodingError(missingField): JobsDetail[0] has no JobId")
}

@Test func reject_LongElementNamesAreTruncatedInReasons() {
    let long = String(repeating: "N", count: 100)
    let reason = failure("<\(long)></X>")?.reason
    #expect(reason == "expected </\(String(repeating: "N", count: 40))…> at byte 102, found </X>")
}
