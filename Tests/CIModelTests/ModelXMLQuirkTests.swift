import CIModel
import Testing

// Each XML quirk of REFERENCE §2, on its own, with small inline bodies.

private func decodeXML(_ body: String) throws -> CallbackEnvelope {
    try CallbackDecoder.decode(Array(body.utf8))
}

private func job(_ inner: String, extra: String = "") -> String {
    "<Response><EventName>TaskFinish</EventName><JobsDetail><JobId>j1</JobId><State>Success</State>\(inner)</JobsDetail>\(extra)</Response>"
}

@Test func xml_RepeatedJobsDetailSiblings_DecodeInOrder() throws {
    let body =
        "<Response><JobsDetail><JobId>a</JobId><State>Running</State></JobsDetail>"
        + "<JobsDetail><JobId>b</JobId><State>Success</State></JobsDetail></Response>"
    let envelope = try decodeXML(body)
    #expect(envelope.jobs.map(\.jobID) == ["a", "b"])
    #expect(envelope.jobs.map(\.state) == [.running, .success])
    #expect(envelope.eventName == nil)
}

@Test func xml_AnyRootName_IsAcceptedLeniently() throws {
    let envelope = try decodeXML(
        "<Callback><EventName>TaskFinish</EventName><JobsDetail><JobId>j</JobId><State>Failed</State></JobsDetail></Callback>"
    )
    #expect(envelope.eventName == "TaskFinish")
    #expect(envelope.jobs.first?.state == .failed)
}

@Test func xml_EmptyRoot_GivesAnEmptyEnvelope() throws {
    let envelope = try decodeXML("<Response/>")
    #expect(envelope == CallbackEnvelope(format: .xml))
}

@Test func xml_AbsentSelfClosingAndOpenCloseEmpty_AllReadAsNil() throws {
    let absent = try #require(try decodeXML(job("")).jobs.first)
    let selfClosing = try #require(try decodeXML(job("<Message/><Code />")).jobs.first)
    let openClose = try #require(try decodeXML(job("<Message></Message><Code></Code>")).jobs.first)
    #expect(absent.message == nil)
    #expect(selfClosing.message == nil)
    #expect(selfClosing.code == nil)
    #expect(openClose.message == nil)
    #expect(openClose.code == nil)
    // The tree still tells them apart: absent fields are absent, empty ones are "".
    #expect(absent.normalized["Message"] == nil)
    #expect(selfClosing.normalized["Message"] == .text(""))
    #expect(openClose.normalized["Message"] == .text(""))
    #expect(selfClosing.normalized["Message"]?.text == "")
}

@Test func xml_PredefinedAndNumericEntities_Decode() throws {
    let body = job(
        "<Operation><UserData>&lt;a&gt; &amp; &quot;q&quot; &apos;s&apos; &#34;d&#34; &#x22;h&#x22; &#x1F600; &#20013;</UserData></Operation>"
    )
    let userData = try decodeXML(body).jobs.first?.userData
    #expect(userData == "<a> & \"q\" 's' \"d\" \"h\" 😀 中")
}

@Test func xml_TextSplitAroundEntitiesCommentsAndCDATA_IsJoined() throws {
    let body = job("<Operation><UserData>owner&apos;s <!-- note -->copy<![CDATA[ & <raw> ]]>end</UserData></Operation>")
    #expect(try decodeXML(body).jobs.first?.userData == "owner's copy & <raw> end")
}

@Test func xml_CDATA_KeepsMarkupCharactersVerbatim() throws {
    let body = job("<Operation><UserData><![CDATA[<b>&amp;</b>]]></UserData></Operation>")
    #expect(try decodeXML(body).jobs.first?.userData == "<b>&amp;</b>")
}

@Test func xml_BOMAndProlog_AreSkipped() throws {
    let body = [0xEF, 0xBB, 0xBF] + Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- sent by CI -->\n\(job(""))\n".utf8)
    #expect(CallbackDecoder.detectFormat(body) == .xml)
    let envelope = try CallbackDecoder.decode(body)
    #expect(envelope.jobs.first?.jobID == "j1")
}

@Test func xml_AttributesNamespacesAndProcessingInstructions_AreIgnored() throws {
    let body =
        "<Response xmlns=\"http://example.invalid/ci\" a='1&amp;2'><?pi data?><JobsDetail id=\"x\"><JobId>j</JobId>"
        + "<State kind = 'final' >Success</State></JobsDetail></Response>"
    let envelope = try decodeXML(body)
    #expect(envelope.jobs.first?.state == .success)
    #expect(envelope.jobs.first?.normalized.fields.map(\.name) == ["JobId", "State"])
}

@Test func xml_WhitespaceBetweenElementsIsDropped_ButKeptInsideALeaf() throws {
    let body =
        "<Response>\n  <JobsDetail>\n    <JobId>j</JobId>\n    <State>Success</State>\n    <Operation><UserData>  two  spaces  </UserData></Operation>\n    <Message>   </Message>\n  </JobsDetail>\n</Response>\n"
    let job = try #require(try decodeXML(body).jobs.first)
    #expect(job.userData == "  two  spaces  ")
    #expect(job.normalized["Message"] == .text("   "))
    #expect(job.normalized.fields.count == 4)
}

@Test func xml_CarriageReturnLineEnds_AreNormalisedToLF() throws {
    let body = job("<Operation><UserData>a\r\nb\rc</UserData></Operation>")
    #expect(try decodeXML(body).jobs.first?.userData == "a\nb\nc")
}

@Test func xml_PlainDoctypeWithoutInternalSubset_IsSkipped() throws {
    let body = "<!DOCTYPE Response SYSTEM \"http://example.invalid/never-fetched.dtd\">" + job("")
    #expect(try decodeXML(body).jobs.first?.jobID == "j1")
}

@Test func xml_DashAndSpaceSeparatedTimes_AreRead() throws {
    let body = job("<CreationTime>2022-08-09 14:54:17+0800</CreationTime><StartTime>-</StartTime><EndTime></EndTime>")
    let job = try #require(try decodeXML(body).jobs.first)
    #expect(job.creationTime?.rfc3339 == "2022-08-09T14:54:17+08:00")
    #expect(job.startTime == nil)
    #expect(job.endTime == nil)
    #expect(job.normalized["CreationTime"] == .text("2022-08-09T14:54:17+08:00"))
    #expect(job.normalized["StartTime"] == nil)
    #expect(job.normalized["EndTime"] == nil)
}

@Test func xml_UnparseableTime_IsKeptAsReceivedAndReadAsNil() throws {
    let job = try #require(try decodeXML(job("<EndTime>yesterday</EndTime>")).jobs.first)
    #expect(job.endTime == nil)
    #expect(job.normalized["EndTime"] == .text("yesterday"))
}

@Test func xml_UnknownFieldsAtAnyDepth_AreIgnoredButKept() throws {
    let body = job(
        "<XFuture><Deep><Deeper>v</Deeper></Deep></XFuture><Operation><XNew>1</XNew><UserData>u</UserData></Operation>",
        extra: "<XEnvelope>e</XEnvelope>"
    )
    let job = try #require(try decodeXML(body).jobs.first)
    #expect(job.userData == "u")
    #expect(job.normalized[path: "XFuture", "Deep", "Deeper"] == .text("v"))
    #expect(job.normalized[path: "Operation", "XNew"] == .text("1"))
}

@Test func xml_NonNumericProgressAndJobLevel_ReadAsNilNotAnError() throws {
    let job = try #require(try decodeXML(job("<Progress>n/a</Progress><Operation><JobLevel>high</JobLevel></Operation>")).jobs.first)
    #expect(job.progress == nil)
    #expect(job.jobLevel == nil)
    #expect(job.normalized["Progress"] == .text("n/a"))
}

@Test func xml_PrettyPrintedJobIdAndState_AreTrimmed() throws {
    let job = try #require(try decodeXML(job("").replacingOccurrences("<JobId>j1</JobId>", "<JobId>\n  j1\n</JobId>")).jobs.first)
    #expect(job.jobID == "j1")
}

@Test func xml_BucketFallsBackToBucketWhenBucketIdIsAbsent() throws {
    let job = try #require(try decodeXML(job("<Input><Bucket>b-1</Bucket><Object>o</Object></Input>")).jobs.first)
    #expect(job.input == JobInput(bucketID: "b-1", object: "o", region: nil))
}

@Test func xml_NonExistJobIds_AcceptsRepeatedAndCommaSeparatedForms() throws {
    let body = "<Response><NonExistJobIds>ja, jb</NonExistJobIds><NonExistJobIds>jc</NonExistJobIds></Response>"
    #expect(try decodeXML(body).nonExistJobIDs == ["ja", "jb", "jc"])
}

@Test func xml_WorkflowFinishInline_HasExecutionAndNoJobs() throws {
    let body =
        "<Response><EventName>WorkflowFinish</EventName><WorkflowExecution><RunId>r</RunId><State>Failed</State>"
        + "<CreateTime>2022-08-09 14:54:17+0800</CreateTime><Tasks><Type>Transcode</Type><JobId>jt</JobId><State>Failed</State></Tasks>"
        + "</WorkflowExecution></Response>"
    let envelope = try decodeXML(body)
    #expect(envelope.jobs.isEmpty)
    #expect(envelope.workflowExecution?.state == "Failed")
    #expect(envelope.workflowExecution?.tasks == [WorkflowTask(type: "Transcode", jobID: "jt", state: "Failed")])
}

@Test func xml_NodeXMLDecode_KeepsTheRootName() throws {
    let root = try CINodeXML.decode(Array("<Error><Code>NoSuchKey</Code><Message>m</Message></Error>".utf8))
    #expect(root.name == "Error")
    #expect(root.value["Code"]?.text == "NoSuchKey")
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

@Test func xml_LongElementNames_AreKeptWhole() throws {
    let name = "X" + String(repeating: "LongName", count: 10)
    let root = try CINodeXML.decode(Array("<R><\(name)>v</\(name)><\(name)/></R>".utf8))
    #expect(root.value.fields.map(\.name) == [name, name])
}

@Test func xml_WhitespaceBeforeTheDeclaration_IsTolerated() throws {
    #expect(try decodeXML("\n  <?xml version=\"1.0\"?>" + job("")).jobs.first?.jobID == "j1")
}

@Test func xml_MultibyteNamesAndSurrogateFreeReferences_Decode() throws {
    let root = try CINodeXML.decode(Array("<根><名字>&#x10FFFF;&#xE000;</名字></根>".utf8))
    #expect(root.name == "根")
    #expect(root.value["名字"]?.text == "\u{10FFFF}\u{E000}")
}
