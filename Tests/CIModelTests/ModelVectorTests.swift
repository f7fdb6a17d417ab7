import CIModel
import Foundation
import Testing

// Every file in Tests/Fixtures/ci-vectors, decoded with field-by-field expectations. The fixtures are part
// of the repository (their README says where each comes from); a missing file fails the tests.

private enum Vectors {
    /// `#filePath` is `<repo>/Tests/CIModelTests/ModelVectorTests.swift`.
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/ci-vectors").path

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        let path = directory + "/" + name
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Missing(description: "test vector \(path) is missing from the repository")
        }
        return [UInt8](data)
    }

    static func decode(_ name: String) throws -> CallbackEnvelope {
        try CallbackDecoder.decode(bytes(name))
    }

    static func only(_ name: String) throws -> JobsDetail {
        let envelope = try decode(name)
        try #require(envelope.jobs.count == 1, "\(name) should hold exactly one JobsDetail")
        return envelope.jobs[0]
    }

    /// Every vector this file has expectations for; a new vector fails the coverage test until added.
    static let covered: Set<String> = [
        "go-sdk-marshal-extract-roundtrip.json", "go-sdk-marshal-extract-roundtrip.xml",
        "json-dwm-embed-object.json", "json-extract-failed.json", "json-extract-nonascii.json",
        "json-extract-success-array.json", "json-extract-success-object.json", "json-extract-unknown-fields.json",
        "json-running-describe-equivalent.json", "json-workflow-finish.json", "json-workflow-snapshot-array.json",
        "xml-describe-jobs-list-response.xml", "xml-describe-running-response.xml", "xml-extract-failed.xml",
        "xml-extract-nonascii.xml", "xml-extract-submitted-response.xml", "xml-extract-success-compact-prolog.xml",
        "xml-extract-success.xml", "xml-go-sdk-example-workflow-superresolution.xml",
        "xml-no-eventname-empty-elements.xml", "xml-workflow-finish.xml", "xml-workflow-snapshot.xml",
    ]
}

/// The job with `normalized` blanked, to compare the typed reading of two renderings.
private func typed(_ job: JobsDetail) -> JobsDetail {
    var copy = job
    copy.normalized = .text("")
    return copy
}

private let extractJobID = "j515a494af86111ecb8546d80f2baf56f"
private let queue = "p2242ab62c7c94486915508540933a2c6"

@Test func vectors_FolderHoldsExactlyTheCoveredFiles() throws {
    let names: [String]
    do {
        names = try FileManager.default.contentsOfDirectory(atPath: Vectors.directory)
    } catch {
        Issue.record("vector folder \(Vectors.directory) is missing from the repository")
        return
    }
    let vectors = Set(names.filter { $0.hasSuffix(".xml") || $0.hasSuffix(".json") })
    #expect(
        vectors == Vectors.covered,
        "vectors without expectations: \(vectors.subtracting(Vectors.covered)); expected but absent: \(Vectors.covered.subtracting(vectors))"
    )
}

@Test func vectors_XMLExtractSuccess_DecodesEveryField() throws {
    let envelope = try Vectors.decode("xml-extract-success.xml")
    #expect(envelope.format == .xml)
    #expect(envelope.eventName == "TaskFinish")
    #expect(envelope.workflowExecution == nil)
    #expect(envelope.nextToken == nil)
    #expect(envelope.nonExistJobIDs.isEmpty)
    try #require(envelope.jobs.count == 1)
    let job = envelope.jobs[0]
    #expect(job.jobID == extractJobID)
    #expect(job.state == .success)
    #expect(job.code == "Success")
    #expect(job.message == "done")
    #expect(job.tag == "ExtractDigitalWatermark")
    #expect(job.subTag == nil)
    #expect(job.queueID == queue)
    #expect(job.queueType == nil)
    #expect(job.progress == nil)
    #expect(job.creationTime?.rfc3339 == "2022-06-30T18:42:20+08:00")
    #expect(job.creationTime?.date == Date(timeIntervalSince1970: 1_656_585_740))
    #expect(job.creationTime?.utcOffsetSeconds == 28_800)
    #expect(job.startTime?.rfc3339 == "2022-06-30T18:42:21+08:00")
    #expect(job.endTime?.rfc3339 == "2022-06-30T18:42:54+08:00")
    #expect(job.input == JobInput(bucketID: "test-123456789", object: "output/digital.mp4", region: "ap-chongqing"))
    #expect(job.watermark == ExtractedWatermark(type: "Text", version: "V1", message: "123456789ab"))
    #expect(job.userData == "This is my ExtractDigitalWatermark job.")
    #expect(job.jobLevel == nil)
    #expect(job.workflow == nil)
    #expect(job.normalized["CreationTime"] == .text("2022-06-30T18:42:20+08:00"))
    #expect(job.normalized[path: "Operation", "ExtractDigitalWatermark", "Message"]?.text == "123456789ab")
    #expect(
        job.normalized.fields.map(\.name) == [
            "Code", "CreationTime", "EndTime", "Input", "JobId", "Message", "Operation", "QueueId", "StartTime", "State", "Tag",
        ]
    )
}

@Test func vectors_JSONExtractSuccessObject_EqualsTheXMLRendering() throws {
    let xml = try Vectors.decode("xml-extract-success.xml")
    let json = try Vectors.decode("json-extract-success-object.json")
    #expect(json.format == .json)
    #expect(json.eventName == "TaskFinish")
    // Same fields in the same order, pretty-printing ignored: even `normalized` matches.
    #expect(json.jobs == xml.jobs)
}

@Test func vectors_JSONExtractSuccessArray_EqualsTheObjectForm() throws {
    let object = try Vectors.decode("json-extract-success-object.json")
    let array = try Vectors.decode("json-extract-success-array.json")
    #expect(array.jobs.count == 1)
    #expect(array.jobs == object.jobs)
    #expect(array.eventName == "TaskFinish")
}

@Test func vectors_XMLCompactProlog_EqualsThePrettyPrintedForm() throws {
    let pretty = try Vectors.decode("xml-extract-success.xml")
    let compact = try Vectors.decode("xml-extract-success-compact-prolog.xml")
    #expect(compact == pretty)
}

@Test func vectors_XMLExtractFailed_HasEmptyWatermarkMessage() throws {
    let job = try Vectors.only("xml-extract-failed.xml")
    #expect(job.jobID == "j6c2b1f30f86a11ec9452c1c27f56a659")
    #expect(job.state == .failed)
    #expect(job.state.isFinal)
    #expect(job.code == "ResourceNotFound")
    #expect(job.message == "input object output/missing.mp4 not found")
    #expect(job.watermark == ExtractedWatermark(type: "Text", version: "V1", message: nil))
    #expect(job.jobLevel == 0)
    #expect(job.input?.object == "output/missing.mp4")
    #expect(job.creationTime?.rfc3339 == "2022-06-30T18:50:02+08:00")
    #expect(job.endTime?.rfc3339 == "2022-06-30T18:50:04+08:00")
    #expect(job.normalized[path: "Operation", "ExtractDigitalWatermark", "Message"] == .text(""))
}

@Test func vectors_JSONExtractFailed_HasNoWatermarkMessageKey() throws {
    let envelope = try Vectors.decode("json-extract-failed.json")
    #expect(envelope.eventName == "TaskFinish")
    let job = try #require(envelope.jobs.first)
    #expect(job.jobID == "j8a31d2c4f86b11ec8a5a87e016101404")
    #expect(job.state == .failed)
    #expect(job.code == "InternalError")
    #expect(job.message == "extract digital watermark failed")
    #expect(job.watermark == ExtractedWatermark(type: "Text", version: "V1", message: nil))
    #expect(job.normalized[path: "Operation", "ExtractDigitalWatermark", "Message"] == nil)
    #expect(job.input == JobInput(bucketID: "test-123456789", object: "output/digital-recompressed.mp4", region: "ap-chongqing"))
    #expect(job.startTime?.rfc3339 == "2022-06-30T18:55:12+08:00")
}

@Test func vectors_XMLNonASCII_DecodesChineseAndEntities() throws {
    let job = try Vectors.only("xml-extract-nonascii.xml")
    #expect(job.jobID == extractJobID)
    #expect(job.watermark?.message == "腾讯云版权_张三-001*")
    #expect(job.input?.object == "output/示例视频 01 & 预告.mp4")
    #expect(job.userData == "asset \"42\" & owner's copy")
}

@Test func vectors_JSONNonASCII_EqualsTheXMLRendering() throws {
    let xml = try Vectors.decode("xml-extract-nonascii.xml")
    let json = try Vectors.decode("json-extract-nonascii.json")
    #expect(json.jobs.first?.watermark?.message == "腾讯云版权_张三-001*")
    #expect(json.jobs.first?.userData == "asset \"42\" & owner's copy")
    #expect(json.jobs == xml.jobs)
}

@Test func vectors_JSONUnknownFields_AreIgnoredButKept() throws {
    let envelope = try Vectors.decode("json-extract-unknown-fields.json")
    #expect(envelope.eventName == "TaskFinish")
    let job = try #require(envelope.jobs.first)
    #expect(envelope.jobs.count == 1)
    #expect(job.jobID == extractJobID)
    #expect(job.state == .success)
    #expect(job.progress == 100)
    #expect(job.queueType == "Common")
    #expect(job.subTag == nil)
    #expect(job.jobLevel == 0)
    #expect(job.watermark?.message == "123456789ab")
    #expect(job.normalized["SubTag"] == .text(""))
    #expect(job.normalized[path: "XFutureTopLevel", "Nested"]?.all("Deep") == [.text("x"), .text("y")])
    #expect(job.normalized[path: "Operation", "XFutureBlock"]?.all("Items").count == 2)
    #expect(job.normalized[path: "Operation", "ExtractDigitalWatermark", "XFutureScore"] == .text("0.98"))
}

@Test func vectors_JSONRunningDescribeEquivalent_IsNotFinal() throws {
    let envelope = try Vectors.decode("json-running-describe-equivalent.json")
    #expect(envelope.eventName == nil)
    let job = try #require(envelope.jobs.first)
    #expect(job.jobID == "j8d121820f5e411ec926ef19d53ba9c6f")
    #expect(job.state == .running)
    #expect(!job.state.isFinal)
    #expect(job.progress == 30)
    #expect(job.tag == "Transcode")
    #expect(job.endTime == nil)
    #expect(job.normalized["EndTime"] == nil)
    #expect(job.startTime?.rfc3339 == "2022-06-27T15:23:13+08:00")
    #expect(job.jobLevel == 0)
    #expect(job.userData == "This is my data.")
    #expect(job.watermark == nil)
    #expect(job.normalized["Operation"]?.all("WatermarkTemplateId").count == 3)
}

@Test func vectors_XMLSubmittedResponse_HasDashTimesAndNoEventName() throws {
    let envelope = try Vectors.decode("xml-extract-submitted-response.xml")
    #expect(envelope.eventName == nil)
    let job = try #require(envelope.jobs.first)
    #expect(job.jobID == "j8d121820f5e411ec926ef19d53ba9c6f")
    #expect(job.state == .submitted)
    #expect(job.code == "Success")
    #expect(job.message == nil)
    #expect(job.creationTime?.rfc3339 == "2022-06-27T15:23:10+08:00")
    #expect(job.creationTime?.date == Date(timeIntervalSince1970: 1_656_314_590))
    #expect(job.startTime == nil)
    #expect(job.endTime == nil)
    #expect(job.normalized["StartTime"] == nil)
    #expect(job.normalized["EndTime"] == nil)
    #expect(job.normalized["Message"] == .text(""))
    #expect(job.watermark == ExtractedWatermark(type: "Text", version: "V1", message: nil))
    #expect(job.userData == "This is my data.")
    #expect(job.jobLevel == 0)
    #expect(job.input?.bucketID == "test-123456789")
}

@Test func vectors_XMLDescribeRunning_ReadsEmbeddedWatermarkAsUnknown() throws {
    let envelope = try Vectors.decode("xml-describe-running-response.xml")
    #expect(envelope.eventName == nil)
    let job = try #require(envelope.jobs.first)
    #expect(job.state == .running)
    #expect(job.progress == 30)
    #expect(job.tag == "Transcode")
    #expect(job.endTime == nil)
    #expect(job.watermark == nil)
    #expect(job.jobLevel == 0)
    #expect(job.normalized[path: "Operation", "DigitalWatermark", "State"] == .text("Running"))
    #expect(job.normalized[path: "Operation", "RemoveWatermark", "Dx"] == .text("150"))
    // Same job as the JSON describe-equivalent vector, apart from the empty <Message/>.
    let json = try Vectors.only("json-running-describe-equivalent.json")
    #expect(typed(json) == typed(job))
}

@Test func vectors_XMLDescribeJobsList_HasTwoJobsAndNextToken() throws {
    let envelope = try Vectors.decode("xml-describe-jobs-list-response.xml")
    #expect(envelope.nextToken == "225508")
    #expect(envelope.jobs.map(\.jobID) == ["j8d121820f5e411ec926ef19d53ba9c6f", "j9c0a4726f6ac11ec96aaa9b64ab18d00"])
    #expect(envelope.jobs.map(\.state) == [.running, .success])
    #expect(envelope.jobs.map(\.progress) == [30, 100])
    #expect(envelope.jobs[0].endTime == nil)
    #expect(envelope.jobs[1].endTime?.rfc3339 == "2022-06-27T15:24:33+08:00")
    #expect(
        envelope.jobs[1].normalized[path: "Operation", "MediaResult", "OutputFile", "Md5Info", "Md5"] == .text("3df1f845d2ffd20a525a93ec40014d90")
    )
}

@Test func vectors_XMLWorkflowSnapshot_ReadsWorkflowAndRepeatedSiblings() throws {
    let job = try Vectors.only("xml-workflow-snapshot.xml")
    #expect(job.jobID == "j4e431ba0f86711ecb8546d80f2baf56f")
    #expect(job.tag == "Snapshot")
    #expect(job.message == nil)
    #expect(
        job.workflow
            == JobWorkflow(
                runID: "ic90edd59f84f11ec9d4f525400a3c59f",
                workflowID: "web6ac56c1ef54dbfa44d7f4103203be9",
                workflowName: "workflow-test",
                name: "Snapshot_1581665960537"
            )
    )
    #expect(job.normalized["Input"]?.all("CosHeaders").map { $0["Key"]?.text } == ["Content-Type", "x-cos-request-id", "EventName", "Size"])
    let outputFile = try #require(job.normalized[path: "Operation", "MediaResult", "OutputFile"])
    #expect(outputFile.all("ObjectName").compactMap(\.text) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"])
    #expect(outputFile["Md5Info"] == .text(""))
    #expect(job.normalized[path: "Operation", "MediaInfo", "Stream", "Audio"] == .text(""))
}

@Test func vectors_JSONWorkflowSnapshotArray_MatchesTheXMLTypedFields() throws {
    let envelope = try Vectors.decode("json-workflow-snapshot-array.json")
    #expect(envelope.eventName == "TaskFinish")
    let job = try #require(envelope.jobs.first)
    let xml = try Vectors.only("xml-workflow-snapshot.xml")
    #expect(typed(job) == typed(xml))
    #expect(job.normalized[path: "Operation", "MediaResult", "OutputFile"]?.all("ObjectName").count == 6)
    #expect(job.normalized[path: "Operation", "MediaResult", "OutputFile", "SpriteOutputFile"]?.all("ObjectName") == [.text("0.jpg")])
    #expect(job.normalized[path: "Operation", "MediaInfo", "Stream"] == .element([]))
    #expect(job.normalized[path: "Operation", "MediaInfo", "Stream"]?.text == "")
    #expect(job.normalized["Input"]?.all("CosHeaders").count == 4)
}

@Test func vectors_JSONEmbedJob_HasNoExtractedWatermark() throws {
    let job = try Vectors.only("json-dwm-embed-object.json")
    #expect(job.jobID == "ja8de3b46f86011ec9452c1c27f56a659")
    #expect(job.tag == "DigitalWatermark")
    #expect(job.subTag == "DigitalWatermark")
    #expect(job.state == .success)
    #expect(job.watermark == nil)
    #expect(job.userData == "This is my DigitalWatermark job.")
    #expect(job.creationTime?.rfc3339 == "2022-06-30T18:37:37+08:00")
    #expect(job.normalized[path: "Operation", "DigitalWatermark", "Message"] == .text("123456789ab"))
    #expect(job.normalized[path: "Operation", "MediaInfo", "Stream", "Video", "Width"] == .text("1920"))
}

@Test func vectors_XMLGoSDKSuperResolution_KeepsNestedFailedStateApart() throws {
    let envelope = try Vectors.decode("xml-go-sdk-example-workflow-superresolution.xml")
    #expect(envelope.eventName == "TaskFinish")
    let job = try #require(envelope.jobs.first)
    #expect(job.jobID == "j06668dc0f86811ecb90d0b03267ce0e5")
    #expect(job.state == .success)
    #expect(job.tag == "SuperResolution")
    #expect(job.subTag == "DigitalWatermark")
    #expect(job.progress == 100)
    #expect(job.jobLevel == 0)
    #expect(job.message == nil)
    #expect(job.workflow?.name == "SuperResolution_1581665960537")
    #expect(job.workflow?.workflowName == "workflow-test")
    #expect(job.normalized[path: "Operation", "DigitalWatermark", "State"] == .text("Failed"))
    #expect(job.normalized["Input"]?.all("CosHeaders").count == 4)
    #expect(job.normalized["Operation"]?.all("WatermarkTemplateId").count == 2)
    #expect(job.normalized[path: "Operation", "Output", "Object"] == .text("output/super_resolution.${ext}"))
}

@Test func vectors_XMLNoEventName_KeepsSelfClosingEmpties() throws {
    let envelope = try Vectors.decode("xml-no-eventname-empty-elements.xml")
    #expect(envelope.eventName == nil)
    let job = try #require(envelope.jobs.first)
    #expect(job.jobID == "jf6717076895711ecafdd594be6cca70c")
    #expect(job.state == .success)
    #expect(job.tag == "Transcode")
    #expect(job.progress == 100)
    #expect(job.queueID == "paaf4fce5521a40888a3034a5de80f6ca")
    #expect(job.input == JobInput(bucketID: "wwj-cq-1253960454", object: "input/117374C.mp4", region: "ap-chongqing"))
    #expect(job.creationTime?.rfc3339 == "2022-02-09T11:25:43+08:00")
    #expect(job.normalized[path: "Operation", "Transcode", "Audio", "Bitrate"] == .text(""))
    #expect(job.normalized[path: "Operation", "Transcode", "Audio", "KeepTwoTracks"] == .text("false"))
    #expect(job.normalized[path: "Operation", "MediaInfo", "Stream", "Video", "Dar"] == .text("16:9"))
}

@Test func vectors_XMLWorkflowFinish_HasExecutionAndNoJobs() throws {
    let envelope = try Vectors.decode("xml-workflow-finish.xml")
    #expect(envelope.eventName == "WorkflowFinish")
    #expect(envelope.jobs.isEmpty)
    let execution = try #require(envelope.workflowExecution)
    #expect(execution.runID == "i166ee19017b011eda8a5525400c540df")
    #expect(execution.workflowID == "web6ac56c1ef54dbfa44d7f4103203be9")
    #expect(execution.workflowName == "workflow-3")
    #expect(execution.state == "Success")
    #expect(execution.bucketID == "test-1234567890")
    #expect(execution.object == "wk-test/game.mp4")
    #expect(execution.createTime?.rfc3339 == "2022-08-09T14:54:17+08:00")
    #expect(execution.createTime?.date == Date(timeIntervalSince1970: 1_660_028_057))
    #expect(execution.tasks.map(\.type) == ["Snapshot", "Transcode"])
    #expect(execution.tasks.map(\.jobID) == ["j23c11e1e17b011edaab4ab15ec33d076", "j168668b217b011ed8efb27bb229e2d11"])
    #expect(execution.tasks.map(\.state) == ["Success", "Success"])
    #expect(execution.tasks.map(\.name) == ["Snapshot_1581665960536", "Transcode_1581665960537"])
    #expect(execution.tasks[0].endTime?.rfc3339 == "2022-08-09T14:54:42+08:00")
}

@Test func vectors_JSONWorkflowFinish_EqualsTheXMLRendering() throws {
    let xml = try Vectors.decode("xml-workflow-finish.xml")
    let json = try Vectors.decode("json-workflow-finish.json")
    #expect(json.eventName == "WorkflowFinish")
    #expect(json.jobs.isEmpty)
    #expect(json.workflowExecution != nil)
    #expect(json.workflowExecution == xml.workflowExecution)
}

@Test func vectors_GoSDKXMLRoundTrip_LosesOnlyWhatTheSDKDrops() throws {
    let envelope = try Vectors.decode("go-sdk-marshal-extract-roundtrip.xml")
    #expect(envelope.eventName == "TaskFinish")
    let job = try #require(envelope.jobs.first)
    #expect(job.jobID == extractJobID)
    #expect(job.state == .success)
    #expect(job.code == "Success")
    #expect(job.message == "done")
    #expect(job.input == JobInput(bucketID: nil, object: "output/digital.mp4", region: nil))
    #expect(job.watermark == ExtractedWatermark(type: "Text", version: "V1", message: nil))
    #expect(job.userData == "This is my ExtractDigitalWatermark job.")
    #expect(job.endTime?.rfc3339 == "2022-06-30T18:42:54+08:00")
}

@Test func vectors_GoSDKJSON_DecodesXMLNameAndNulls() throws {
    let envelope = try Vectors.decode("go-sdk-marshal-extract-roundtrip.json")
    #expect(envelope.format == .json)
    #expect(envelope.eventName == "TaskFinish")
    let job = try #require(envelope.jobs.first)
    #expect(job.progress == nil)
    #expect(job.subTag == nil)
    #expect(job.workflow == nil)
    #expect(job.jobLevel == 0)
    #expect(job.normalized["Workflow"] == nil)
    #expect(job.normalized["Progress"] == .text(""))
    #expect(job.normalized[path: "Operation", "Transcode"] == nil)
    #expect(job.normalized[path: "Operation", "JobLevel"] == .text("0"))
    #expect(job.normalized[path: "Input", "Lang"] == .text(""))
    // Typed fields agree with the Go SDK's XML rendering of the same struct, except the JobLevel
    // that its XML tags omit.
    var xml = try Vectors.only("go-sdk-marshal-extract-roundtrip.xml")
    xml.jobLevel = 0
    #expect(typed(job) == typed(xml))
}
