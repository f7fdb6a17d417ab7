import CIModel
import Testing

// Input the store could not hold (over-long identifiers and names, times PostgreSQL refuses), input that is
// ambiguous (a field given twice), and bodies that are not CI callbacks: each is refused with a reason that
// names the field and the limit, or, for times, read as "not set".

private func failure(_ body: String, callback: Bool = false) -> CallbackDecodingError? {
    do {
        if callback {
            _ = try CallbackDecoder.decodeCallback(Array(body.utf8))
        } else {
            _ = try CallbackDecoder.decode(Array(body.utf8))
        }
        return nil
    } catch {
        return error
    }
}

private func jsonJob(_ members: String) -> String {
    #"{"EventName":"TaskFinish","JobsDetail":{\#(members)}}"#
}

// MARK: Field lengths

@Test(arguments: [
    ("JobId", 128), ("State", 32), ("Tag", 128), ("SubTag", 128), ("QueueId", 128), ("QueueType", 128), ("Code", 128),
])
func bounds_IdentifierOverItsLimit_IsRefusedNamingFieldAndLimit(field: String, limit: Int) throws {
    func body(_ length: Int) -> String {
        var members = [("JobId", "j1"), ("State", "Success")]
        let value = String(repeating: "x", count: length)
        if let index = members.firstIndex(where: { $0.0 == field }) { members[index].1 = value } else { members.append((field, value)) }
        return jsonJob(members.map { #""\#($0.0)":"\#($0.1)""# }.joined(separator: ","))
    }
    let error = try #require(failure(body(limit + 1)))
    #expect(error.code == .fieldTooLong)
    #expect(error.reason == "JobsDetail[0].\(field) is \(limit + 1) bytes; the limit is \(limit)")
    // At the limit it is accepted.
    #expect(failure(body(limit)) == nil)
}

@Test func bounds_LongJobIdsFromTheFault_AreRefusedInBothFormats() throws {
    for size in [2_700, 8_000, 9_000] {
        let jobID = String(repeating: "j", count: size)
        let json = try #require(failure(jsonJob(#""JobId":"\#(jobID)","State":"Success""#)))
        #expect(json.reason == "JobsDetail[0].JobId is \(size) bytes; the limit is 128")
        let xml = try #require(failure("<Response><JobsDetail><JobId>\(jobID)</JobId><State>Success</State></JobsDetail></Response>"))
        #expect(xml.reason == json.reason)
    }
}

@Test func bounds_NestedIdentifiersAndEventName_AreBounded() throws {
    let long = String(repeating: "a", count: 129)
    let cases: [(String, String)] = [
        (jsonJob(#""JobId":"j","State":"Success","Input":{"BucketId":"\#(long)"}"#), "JobsDetail[0].Input.BucketId is 129 bytes; the limit is 128"),
        (jsonJob(#""JobId":"j","State":"Success","Input":{"Region":"\#(long)"}"#), "JobsDetail[0].Input.Region is 129 bytes; the limit is 128"),
        (jsonJob(#""JobId":"j","State":"Success","Workflow":{"RunId":"\#(long)"}"#), "JobsDetail[0].Workflow.RunId is 129 bytes; the limit is 128"),
        (
            jsonJob(#""JobId":"j","State":"Success","Operation":{"ExtractDigitalWatermark":{"Type":"\#(long)"}}"#),
            "JobsDetail[0].Operation.ExtractDigitalWatermark.Type is 129 bytes; the limit is 128"
        ),
        (#"{"EventName":"\#(String(repeating: "E", count: 65))","JobsDetail":{"JobId":"j","State":"Success"}}"#, "EventName is 65 bytes; the limit is 64"),
    ]
    for (body, reason) in cases {
        #expect(failure(body)?.reason == reason)
    }
}

@Test func bounds_FreeTextFields_HaveNoLimitOfTheirOwn() throws {
    let long = String(repeating: "水", count: 20_000)
    let body = jsonJob(#""JobId":"j","State":"Success","Message":"\#(long)","Operation":{"UserData":"\#(long)","ExtractDigitalWatermark":{"Message":"\#(long)"}}"#)
    let job = try #require(try CallbackDecoder.decode(Array(body.utf8)).jobs.first)
    #expect(job.message == long)
    #expect(job.watermark?.message == long)
}

// MARK: Names

@Test func bounds_ElementAndKeyNamesOverTheLimit_AreRefused() throws {
    let name = String(repeating: "n", count: 257)
    let xml = try #require(failure("<\(name)/>"))
    #expect(xml.code == .limitExceeded)
    #expect(xml.reason == "a name longer than 256 bytes at byte 1")
    let nested = try #require(failure("<Response><\(name)>x</\(name)></Response>"))
    #expect(nested.reason == "a name longer than 256 bytes at byte 11")
    let json = try #require(failure(#"{"\#(name)":1}"#))
    #expect(json.code == .limitExceeded)
    #expect(json.reason == "a name longer than 256 bytes at byte 1")
    // 900 KB, as in the fault report: refused without building the name.
    let huge = String(repeating: "x", count: 900 * 1024)
    #expect(failure("<\(huge)/>")?.code == .limitExceeded)
    #expect(failure("<R \(huge)=\"1\"/>")?.code == .limitExceeded)
    #expect(failure(#"{"\#(huge)":{}}"#)?.code == .limitExceeded)

    let fits = String(repeating: "n", count: 256)
    #expect(failure(#"{"\#(fits)":1,"JobsDetail":{"JobId":"j","State":"Success"}}"#) == nil)
}

// MARK: Fields given twice

@Test func bounds_DuplicateJSONKeys_AreRefusedAnywhere() throws {
    let cases: [(String, String)] = [
        (#"{"JobsDetail":{"JobId":"a","JobId":"b","State":"Success"}}"#, #"duplicate key "JobId" at byte 27"#),
        (#"{"JobsDetail":{"JobId":"a","State":"Success","State":"Running"}}"#, #"duplicate key "State" at byte 45"#),
        (#"{"JobsDetail":{"JobId":"a","State":"Success","X":{"k":1,"k":2}}}"#, #"duplicate key "k" at byte 56"#),
        (#"{"EventName":"TaskFinish","EventName":"WorkflowFinish"}"#, #"duplicate key "EventName" at byte 26"#),
    ]
    for (body, reason) in cases {
        let error = try #require(failure(body), "\(body)")
        #expect(error.code == .malformedJSON)
        #expect(error.reason == reason)
    }
}

@Test func bounds_DuplicateKeysInALargeObject_AreFound() throws {
    let members = (0..<500).map { #""k\#($0)":1"# }.joined(separator: ",")
    let error = try #require(failure(#"{\#(members),"k250":2}"#))
    #expect(error.reason.hasPrefix(#"duplicate key "k250""#))
    #expect(failure(#"{\#(members),"JobsDetail":{"JobId":"j","State":"Success"}}"#) == nil)
}

@Test func bounds_ASingleValuedFieldGivenTwice_IsRefusedInXMLAndAsAJSONArray() throws {
    let cases: [(String, String)] = [
        ("<Response><JobsDetail><JobId>a</JobId><JobId>b</JobId><State>Success</State></JobsDetail></Response>", "JobsDetail[0] has more than one JobId"),
        ("<Response><JobsDetail><JobId>a</JobId><State>Success</State><State>Running</State></JobsDetail></Response>", "JobsDetail[0] has more than one State"),
        (#"{"JobsDetail":{"JobId":["a","b"],"State":"Success"}}"#, "JobsDetail[0] has more than one JobId"),
        (#"{"JobsDetail":[{"JobId":"a","State":"Success"},{"JobId":"b","State":"Success","Tag":["x","y"]}]}"#, "JobsDetail[1] has more than one Tag"),
        (
            "<Response><JobsDetail><JobId>a</JobId><State>Success</State><Operation><ExtractDigitalWatermark><Message>1</Message><Message>2</Message></ExtractDigitalWatermark></Operation></JobsDetail></Response>",
            "JobsDetail[0] has more than one Operation.ExtractDigitalWatermark.Message"
        ),
        ("<Response><JobsDetail><JobId>a</JobId><State>Success</State><Input><Object>1</Object><Object>2</Object></Input></JobsDetail></Response>", "JobsDetail[0] has more than one Input.Object"),
        ("<Response><EventName>TaskFinish</EventName><EventName>X</EventName><JobsDetail><JobId>a</JobId><State>Success</State></JobsDetail></Response>", "the body has more than one EventName"),
    ]
    for (body, reason) in cases {
        let error = try #require(failure(body), "\(body)")
        #expect(error.code == .duplicateField)
        #expect(error.reason == reason)
    }
    // Repeated siblings that CI documents as lists stay lists.
    let lists = "<Response><JobsDetail><JobId>a</JobId><State>Success</State><Input><CosHeaders><Key>1</Key></CosHeaders><CosHeaders><Key>2</Key></CosHeaders></Input></JobsDetail></Response>"
    #expect(failure(lists) == nil)
}

// MARK: What is a CI callback

@Test(arguments: [
    "{}", "<x/>", "<Response/>", #"{"JobsDetail":[]}"#, #"{"EventName":"TaskFinish"}"#, #"{"EventName":"WorkflowFinish"}"#,
    #"{"EventName":"WorkflowFinish","WorkflowExecution":{}}"#, "<Error><Code>NoSuchKey</Code></Error>", #"{"NextToken":"1"}"#,
])
func bounds_ABodyWithNeitherJobsNorAWorkflowRun_IsNotACallback(body: String) throws {
    let error = try #require(failure(body, callback: true))
    #expect(error.code == .notACallback)
    #expect(error.reason.hasPrefix("not a CI callback: "))
    // The same bodies still decode as API responses (an empty DescribeMediaJobs page is one).
    #expect(failure(body) == nil)
}

@Test func bounds_EveryKnownCallbackShape_IsACallback() throws {
    let bodies = [
        #"{"EventName":"TaskFinish","JobsDetail":{"JobId":"j","State":"Success"}}"#,
        #"{"JobsDetail":[{"JobId":"j","State":"Running"}]}"#,
        #"{"Response":{"JobsDetail":{"JobId":"j","State":"Running"}}}"#,
        "<Response><JobsDetail><JobId>j</JobId><State>Running</State></JobsDetail></Response>",
        #"{"EventName":"WorkflowFinish","WorkflowExecution":{"RunId":"r","State":"Success"}}"#,
        "<Response><EventName>WorkflowFinish</EventName><WorkflowExecution><WorkflowId>w</WorkflowId></WorkflowExecution></Response>",
    ]
    for body in bodies {
        #expect(failure(body, callback: true) == nil, "\(body)")
    }
}
