import CIModel
import Testing

// Each JSON quirk of REFERENCE §2, on its own, with small inline bodies.

private func decodeJSON(_ body: String) throws -> CallbackEnvelope {
    try CallbackDecoder.decode(Array(body.utf8))
}

private func onlyJob(_ body: String) throws -> JobsDetail {
    let envelope = try decodeJSON(body)
    try #require(envelope.jobs.count == 1)
    return envelope.jobs[0]
}

private let minimalJob = #"{"JobId":"j1","State":"Success","Code":"Success"}"#

@Test func json_JobsDetailObjectAndOneElementArray_DecodeTheSame() throws {
    let object = try decodeJSON(#"{"EventName":"TaskFinish","JobsDetail":\#(minimalJob)}"#)
    let array = try decodeJSON(#"{"EventName":"TaskFinish","JobsDetail":[\#(minimalJob)]}"#)
    #expect(object.jobs.count == 1)
    #expect(object == array)
}

@Test func json_TwoElementJobsDetailArray_GivesTwoJobs() throws {
    let envelope = try decodeJSON(#"{"JobsDetail":[{"JobId":"a","State":"Running"},{"JobId":"b","State":"Cancel"}]}"#)
    #expect(envelope.jobs.map(\.jobID) == ["a", "b"])
    #expect(envelope.jobs.map(\.state) == [.running, .cancel])
}

@Test func json_MissingEventName_IsNil() throws {
    #expect(try decodeJSON(#"{"JobsDetail":\#(minimalJob)}"#).eventName == nil)
}

@Test func json_ResponseWrapper_IsUnwrapped() throws {
    let wrapped = try decodeJSON(#"{"Response":{"EventName":"TaskFinish","JobsDetail":\#(minimalJob)}}"#)
    let bare = try decodeJSON(#"{"EventName":"TaskFinish","JobsDetail":\#(minimalJob)}"#)
    #expect(wrapped.eventName == "TaskFinish")
    #expect(wrapped == bare)
}

@Test func json_ScalarsAsStringNumberBoolAndNull_AreReadLeniently() throws {
    let strings = try onlyJob(#"{"JobsDetail":{"JobId":"j","State":"Success","Progress":"100","Operation":{"JobLevel":"0","IgnoreError":"false"}}}"#)
    let numbers = try onlyJob(#"{"JobsDetail":{"JobId":"j","State":"Success","Progress":100,"Operation":{"JobLevel":0,"IgnoreError":false}}}"#)
    let nulls = try onlyJob(#"{"JobsDetail":{"JobId":"j","State":"Success","Progress":null,"Operation":{"JobLevel":null,"IgnoreError":null}}}"#)
    let odd = try onlyJob(#"{"JobsDetail":{"JobId":"j","State":"Success","Progress":1.5,"Operation":{"JobLevel":"x","Height":-3.2e+2}}}"#)
    #expect(strings.progress == 100)
    #expect(strings.jobLevel == 0)
    #expect(numbers.progress == 100)
    #expect(numbers.jobLevel == 0)
    #expect(strings.normalized == numbers.normalized)
    #expect(numbers.normalized[path: "Operation", "IgnoreError"] == .text("false"))
    #expect(nulls.progress == nil)
    #expect(nulls.jobLevel == nil)
    #expect(nulls.normalized["Progress"] == nil)
    #expect(nulls.normalized["Operation"] == .element([]))
    #expect(odd.progress == nil)
    #expect(odd.jobLevel == nil)
    #expect(odd.normalized["Progress"] == .text("1.5"))
    #expect(odd.normalized[path: "Operation", "Height"] == .text("-3.2e+2"))
}

@Test func json_AbsentAndEmptyString_AllReadAsNil() throws {
    let absent = try onlyJob(#"{"JobsDetail":{"JobId":"j","State":"Success"}}"#)
    let empty = try onlyJob(#"{"JobsDetail":{"JobId":"j","State":"Success","Message":"","Tag":""}}"#)
    #expect(absent.message == nil)
    #expect(empty.message == nil)
    #expect(empty.tag == nil)
    #expect(absent.normalized["Message"] == nil)
    #expect(empty.normalized["Message"] == .text(""))
}

@Test func json_EscapesSurrogatePairsAndLiteralUTF8_Decode() throws {
    let body =
        #"{"JobsDetail":{"JobId":"j","State":"Success","Operation":{"UserData":"\"q\" \\ \/ \b\f\n\r\t \u00e9 \u8165\u8baf \uD83D\uDE00 腾讯","ExtractDigitalWatermark":{"Message":"\u817e\u8baf\u4e91"}}}}"#
    let job = try onlyJob(body)
    #expect(job.userData == "\"q\" \\ / \u{08}\u{0C}\n\r\t é \u{8165}\u{8BAF} 😀 腾讯")
    #expect(job.watermark?.message == "腾讯云")
}

@Test func json_BOM_IsSkipped() throws {
    let body = [0xEF, 0xBB, 0xBF] + Array(" \n{\"JobsDetail\":\(minimalJob)}".utf8)
    #expect(CallbackDecoder.detectFormat(body) == .json)
    #expect(try CallbackDecoder.decode(body).jobs.first?.jobID == "j1")
}

@Test func json_DashAndSpaceSeparatedTimes_AreRead() throws {
    let job = try onlyJob(
        #"{"JobsDetail":{"JobId":"j","State":"Running","CreationTime":"2022-08-09 14:54:17+0800","StartTime":"2022-08-09T14:54:18+08:00","EndTime":"-"}}"#
    )
    #expect(job.creationTime?.rfc3339 == "2022-08-09T14:54:17+08:00")
    #expect(job.startTime?.rfc3339 == "2022-08-09T14:54:18+08:00")
    #expect(job.endTime == nil)
    #expect(job.normalized["EndTime"] == nil)
}

@Test func json_UnknownFieldsAtAnyDepth_AreIgnoredButKept() throws {
    let body = #"{"XTop":[1,{"a":null}],"JobsDetail":{"JobId":"j","State":"Success","XDeep":{"A":[{"B":{"C":"c"}}]},"Operation":{"XOp":true}}}"#
    let job = try onlyJob(body)
    #expect(job.normalized[path: "XDeep", "A", "B", "C"] == .text("c"))
    #expect(job.normalized[path: "Operation", "XOp"] == .text("true"))
}

@Test func json_ArraysOfArrays_FlattenIntoRepeatedFields() throws {
    let node = try CINodeJSON.decode(Array(#"{"K":[["a","b"],[],["c"]],"E":[]}"#.utf8))
    #expect(node.all("K") == [.text("a"), .text("b"), .text("c")])
    #expect(node["E"] == nil)
}

@Test func json_WorkflowFinishInline_HasExecutionAndNoJobs() throws {
    let body =
        #"{"EventName":"WorkflowFinish","WorkflowExecution":{"RunId":"r","State":"Success","CreateTime":"2022-08-09 14:54:17+0800","Tasks":{"Type":"Snapshot","JobId":"js","State":"Success"}}}"#
    let envelope = try decodeJSON(body)
    #expect(envelope.jobs.isEmpty)
    #expect(envelope.workflowExecution?.runID == "r")
    #expect(envelope.workflowExecution?.createTime?.rfc3339 == "2022-08-09T14:54:17+08:00")
    #expect(envelope.workflowExecution?.tasks == [WorkflowTask(type: "Snapshot", jobID: "js", state: "Success")])
}

@Test func json_NextTokenAndNonExistJobIds_AreRead() throws {
    let envelope = try decodeJSON(#"{"NextToken":"225508","NonExistJobIds":["ja","jb,jc"]}"#)
    #expect(envelope.nextToken == "225508")
    #expect(envelope.nonExistJobIDs == ["ja", "jb", "jc"])
    #expect(envelope.jobs.isEmpty)
}

@Test func json_DuplicateKeys_AreRefused_ButAnArrayIsRepeatedFields() throws {
    #expect(throws: CallbackDecodingError.self) { try CINodeJSON.decode(Array(#"{"a":"1","a":"2"}"#.utf8)) }
    let node = try CINodeJSON.decode(Array(#"{"a":["1","2"]}"#.utf8))
    #expect(node.all("a") == [.text("1"), .text("2")])
    #expect(node["a"] == .text("1"))
}

@Test func json_SameDataAsXML_DecodesToTheSameJob() throws {
    let xml = try CallbackDecoder.decode(
        Array(
            "<Response><JobsDetail><JobId>j</JobId><State>Success</State><Input><CosHeaders><Key>k1</Key></CosHeaders><CosHeaders><Key>k2</Key></CosHeaders></Input></JobsDetail></Response>"
                .utf8
        )
    )
    let json = try decodeJSON(#"{"JobsDetail":{"JobId":"j","State":"Success","Input":{"CosHeaders":[{"Key":"k1"},{"Key":"k2"}]}}}"#)
    #expect(xml.jobs == json.jobs)
}
