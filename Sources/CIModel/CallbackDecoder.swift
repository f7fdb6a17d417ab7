/// Turns a callback body (or a CI API response body) into a ``CallbackEnvelope``.
///
/// Only well-formedness, the ``CIDecodingLimits`` and a JobsDetail without `JobId` or `State` can
/// fail a body; every other field is read leniently (a non-numeric `Progress` is nil, not an error).
public enum CallbackDecoder {
    /// The format from the first non-whitespace byte after an optional UTF-8 BOM: `<` is XML,
    /// `{` is JSON; nil for anything else, including an empty or whitespace-only body.
    public static func detectFormat(_ body: some Collection<UInt8>) -> CallbackFormat? {
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        var offset = 0
        var bomMatched = 0
        for byte in body {
            defer { offset += 1 }
            if offset == bomMatched, bomMatched < 3, byte == bom[bomMatched] {
                bomMatched += 1
                continue
            }
            switch byte {
            case Ascii.space, Ascii.tab, Ascii.lf, Ascii.cr: continue
            case Ascii.lt: return .xml
            case Ascii.lbrace: return .json
            default: return nil
            }
        }
        return nil
    }

    /// Decodes a whole body.
    ///
    /// XML: the root element (normally `Response`; any name is accepted) holds `EventName`,
    /// `JobsDetail`*, `WorkflowExecution`, `NextToken` and `NonExistJobIds`. JSON: the top-level
    /// object holds the same keys, or wraps them as `{"Response": {…}}` (the Java SDK's advice).
    ///
    /// - Parameters:
    ///   - body: the raw body bytes.
    ///   - limits: nesting and size bounds.
    /// - Throws: ``CallbackDecodingError`` with reason `body is neither XML nor JSON`, a parse
    ///   error with its byte offset, or `JobsDetail[i] has no JobId` / `… has no State`.
    public static func decode(
        _ body: [UInt8],
        limits: CIDecodingLimits = .init()
    ) throws(CallbackDecodingError) -> CallbackEnvelope {
        let (format, root) = try decodeTree(body, limits: limits)
        return try envelope(from: root, format: format)
    }

    /// Decodes a body into its format and root node, without interpreting it.
    ///
    /// For XML the root element's name is dropped; for JSON a `{"Response": {…}}` wrapper is not
    /// removed. ``CINodeXML/decode(_:limits:)`` keeps the XML root name.
    public static func decodeTree(
        _ body: [UInt8],
        limits: CIDecodingLimits = .init()
    ) throws(CallbackDecodingError) -> (format: CallbackFormat, root: CINode) {
        guard let format = detectFormat(body) else {
            throw CallbackDecodingError(code: .notXMLOrJSON, reason: "body is neither XML nor JSON")
        }
        let root: CINode = try body.withUnsafeBufferPointer { buffer throws(CallbackDecodingError) -> CINode in
            switch format {
            case .xml: return try XMLTreeParser.parse(buffer, limits: limits).value
            case .json: return .element(try JSONTreeParser.parseObject(buffer, limits: limits))
            }
        }
        return (format, root)
    }

    // MARK: Envelope

    private static let envelopeKeys: Set<String> = ["EventName", "JobsDetail", "WorkflowExecution", "NextToken", "NonExistJobIds"]

    static func envelope(from decodedRoot: CINode, format: CallbackFormat) throws(CallbackDecodingError) -> CallbackEnvelope {
        var root = decodedRoot
        if format == .json, let wrapped = root["Response"], case .element = wrapped,
            !root.fields.contains(where: { envelopeKeys.contains($0.name) })
        {
            root = wrapped
        }
        var result = CallbackEnvelope(format: format)
        var jobIndex = 0
        for field in root.fields {
            switch field.name {
            case "EventName":
                if result.eventName == nil { result.eventName = nonEmpty(field.value) }
            case "JobsDetail":
                result.jobs.append(try jobsDetail(field.value, index: jobIndex))
                jobIndex += 1
            case "WorkflowExecution":
                if result.workflowExecution == nil { result.workflowExecution = workflowExecution(field.value) }
            case "NextToken":
                if result.nextToken == nil { result.nextToken = nonEmpty(field.value) }
            case "NonExistJobIds":
                appendJobIDs(in: field.value, to: &result.nonExistJobIDs)
            default:
                continue
            }
        }
        return result
    }

    private static func appendJobIDs(in node: CINode, to ids: inout [String]) {
        switch node {
        case .text(let text):
            for part in text.split(separator: ",") {
                let id = trimmed(part)
                if !id.isEmpty { ids.append(id) }
            }
        case .element(let fields):
            for field in fields { appendJobIDs(in: field.value, to: &ids) }
        }
    }

    // MARK: JobsDetail

    private static func jobsDetail(_ node: CINode, index: Int) throws(CallbackDecodingError) -> JobsDetail {
        guard let jobID = node["JobId"]?.text.map(trimmed), !jobID.isEmpty else {
            throw CallbackDecodingError(code: .missingField, reason: "JobsDetail[\(index)] has no JobId")
        }
        guard let state = node["State"]?.text.map(trimmed), !state.isEmpty else {
            throw CallbackDecodingError(code: .missingField, reason: "JobsDetail[\(index)] has no State")
        }
        var job = JobsDetail(jobID: jobID, state: JobState(rawValue: state), normalized: node)
        var normalizedFields: [CIField] = []
        normalizedFields.reserveCapacity(node.fields.count)
        var seen:
            (
                code: Bool, message: Bool, tag: Bool, subTag: Bool, queueID: Bool, queueType: Bool, progress: Bool,
                creation: Bool, start: Bool, end: Bool, input: Bool, operation: Bool, workflow: Bool
            ) =
                (false, false, false, false, false, false, false, false, false, false, false, false, false)

        // One pass over the children: the first occurrence of each name wins, as node[name] would.
        for field in node.fields {
            let value = field.value
            switch field.name {
            case "Code": if !seen.code { seen.code = true; job.code = nonEmpty(value) }
            case "Message": if !seen.message { seen.message = true; job.message = nonEmpty(value) }
            case "Tag": if !seen.tag { seen.tag = true; job.tag = nonEmpty(value) }
            case "SubTag": if !seen.subTag { seen.subTag = true; job.subTag = nonEmpty(value) }
            case "QueueId": if !seen.queueID { seen.queueID = true; job.queueID = nonEmpty(value) }
            case "QueueType": if !seen.queueType { seen.queueType = true; job.queueType = nonEmpty(value) }
            case "Progress": if !seen.progress { seen.progress = true; job.progress = integer(value) }
            case "Input": if !seen.input { seen.input = true; job.input = jobInput(value) }
            case "Workflow": if !seen.workflow { seen.workflow = true; job.workflow = jobWorkflow(value) }
            case "Operation":
                if !seen.operation {
                    seen.operation = true
                    if let extract = value["ExtractDigitalWatermark"], !extract.fields.isEmpty {
                        job.watermark = ExtractedWatermark(
                            type: nonEmpty(extract["Type"]),
                            version: nonEmpty(extract["Version"]),
                            message: nonEmpty(extract["Message"])
                        )
                    }
                    job.userData = nonEmpty(value["UserData"])
                    job.jobLevel = value["JobLevel"].flatMap(integer)
                }
            case "CreationTime", "StartTime", "EndTime":
                guard let text = value.text else { break }
                let stripped = trimmed(text)
                if stripped.isEmpty || stripped == "-" { continue }  // "not set": dropped from normalized
                let timestamp = CITimestamp(ciText: stripped)
                if let timestamp {
                    normalizedFields.append(CIField(name: field.name, value: .text(timestamp.rfc3339)))
                } else {
                    normalizedFields.append(field)
                }
                switch field.name {
                case "CreationTime": if !seen.creation { seen.creation = true; job.creationTime = timestamp }
                case "StartTime": if !seen.start { seen.start = true; job.startTime = timestamp }
                default: if !seen.end { seen.end = true; job.endTime = timestamp }
                }
                continue
            default:
                break
            }
            normalizedFields.append(field)
        }
        if case .element = node { job.normalized = .element(normalizedFields) }
        return job
    }

    private static func jobInput(_ node: CINode) -> JobInput? {
        guard !node.fields.isEmpty else { return nil }
        return JobInput(
            bucketID: nonEmpty(node["BucketId"]) ?? nonEmpty(node["Bucket"]),
            object: nonEmpty(node["Object"]),
            region: nonEmpty(node["Region"])
        )
    }

    private static func jobWorkflow(_ node: CINode) -> JobWorkflow? {
        guard !node.fields.isEmpty else { return nil }
        return JobWorkflow(
            runID: nonEmpty(node["RunId"]),
            workflowID: nonEmpty(node["WorkflowId"]),
            workflowName: nonEmpty(node["WorkflowName"]),
            name: nonEmpty(node["Name"])
        )
    }

    private static func workflowExecution(_ node: CINode) -> WorkflowExecution {
        WorkflowExecution(
            runID: nonEmpty(node["RunId"]),
            workflowID: nonEmpty(node["WorkflowId"]),
            workflowName: nonEmpty(node["WorkflowName"]),
            state: nonEmpty(node["State"]),
            createTime: timestamp(node["CreateTime"]),
            bucketID: nonEmpty(node["BucketId"]),
            object: nonEmpty(node["Object"]),
            tasks: node.all("Tasks").map { task in
                WorkflowTask(
                    type: nonEmpty(task["Type"]),
                    jobID: nonEmpty(task["JobId"]),
                    state: nonEmpty(task["State"]),
                    name: nonEmpty(task["Name"]),
                    createTime: timestamp(task["CreateTime"]),
                    endTime: timestamp(task["EndTime"])
                )
            }
        )
    }

    // MARK: Lenient scalars

    /// Leaf text, with empty read as absent.
    private static func nonEmpty(_ node: CINode?) -> String? {
        guard let text = node?.text, !text.isEmpty else { return nil }
        return text
    }

    /// A decimal integer (`"0"`, `0`, ` 30 `); nil for anything else, never an error.
    private static func integer(_ node: CINode) -> Int? {
        guard let text = node.text else { return nil }
        return Int(trimmed(text))
    }

    private static func timestamp(_ node: CINode?) -> CITimestamp? {
        guard let text = node?.text else { return nil }
        return CITimestamp(ciText: text)
    }

    private static func trimmed(_ text: String) -> String {
        trimmed(text[...])
    }

    /// Strips surrounding ASCII whitespace (pretty-printed XML can wrap a leaf's text in it).
    private static func trimmed(_ text: Substring) -> String {
        let utf8 = text.utf8
        guard let first = utf8.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = utf8.lastIndex(where: { !isSpace($0) })!
        let end = utf8.index(after: last)
        if first == utf8.startIndex, end == utf8.endIndex { return String(text) }
        return String(text[first..<end])
    }

    private static func isSpace(_ c: UInt8) -> Bool {
        c == Ascii.space || c == Ascii.tab || c == Ascii.lf || c == Ascii.cr
    }
}
