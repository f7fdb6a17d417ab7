/// Turns a callback body (or a CI API response body) into a ``CallbackEnvelope``.
///
/// Only well-formedness, the ``CIDecodingLimits`` (structure, name and identifier lengths), a JobsDetail
/// without `JobId` or `State`, and a field read as one value given twice can fail a body; every other
/// field is read leniently (a non-numeric `Progress` is nil, and a time PostgreSQL cannot store is "not
/// set", not an error).
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
    ///   - limits: nesting, size and length bounds.
    /// - Throws: ``CallbackDecodingError`` with reason `body is neither XML nor JSON`, a parse
    ///   error with its byte offset (`duplicate key "JobId" at byte 27` among them), `JobsDetail[i] has
    ///   no JobId` / `… has no State`, `JobsDetail[i] has more than one JobId`, or
    ///   `JobsDetail[i].JobId is 3000 bytes; the limit is 128`, or `more than 1000 JobsDetail in one body`.
    public static func decode(
        _ body: [UInt8],
        limits: CIDecodingLimits = .init()
    ) throws(CallbackDecodingError) -> CallbackEnvelope {
        try decode(body, detectedFormat: detectFormat(body), limits: limits)
    }

    static func decode(
        _ body: [UInt8], detectedFormat: CallbackFormat?, limits: CIDecodingLimits
    ) throws(CallbackDecodingError) -> CallbackEnvelope {
        let (format, root) = try decodeTree(body, detectedFormat: detectedFormat, limits: limits)
        return try envelope(from: root, format: format, limits: limits.fields, maxJobs: limits.maxJobs)
    }

    /// Decodes a body POSTed to the callback URL: ``decode(_:limits:)``, and then the body must be a CI
    /// callback, that is hold at least one JobsDetail (TaskFinish, with or without `EventName`) or a
    /// WorkflowExecution naming its run (`RunId` or `WorkflowId`: WorkflowFinish).
    ///
    /// A well-formed document that is neither (`{}`, `<x/>`, a CI error body, an empty DescribeMediaJobs
    /// page) is refused with code ``CallbackDecodingError/Code/notACallback``, so it is kept as rejected
    /// rather than counted as an accepted callback that says nothing.
    ///
    /// - Throws: what ``decode(_:limits:)`` throws, or `not a CI callback: …`.
    public static func decodeCallback(
        _ body: [UInt8],
        limits: CIDecodingLimits = .init()
    ) throws(CallbackDecodingError) -> CallbackEnvelope {
        try decodeCallback(body, detectedFormat: detectFormat(body), limits: limits)
    }

    /// ``decodeCallback(_:limits:)`` for a caller that has already run ``detectFormat(_:)`` on `body`
    /// because it needs the format even when decoding fails (the ingest handler stores and counts a rejected
    /// body by format), so the body is scanned for its format once per request.
    /// - Parameter detectedFormat: exactly what `detectFormat(body)` returned.
    public static func decodeCallback(
        _ body: [UInt8],
        detectedFormat: CallbackFormat?,
        limits: CIDecodingLimits = .init()
    ) throws(CallbackDecodingError) -> CallbackEnvelope {
        let envelope = try decode(body, detectedFormat: detectedFormat, limits: limits)
        guard envelope.jobs.isEmpty else { return envelope }
        guard let run = envelope.workflowExecution else {
            throw CallbackDecodingError(code: .notACallback, reason: "not a CI callback: no JobsDetail and no WorkflowExecution")
        }
        guard run.runID != nil || run.workflowID != nil else {
            throw CallbackDecodingError(code: .notACallback, reason: "not a CI callback: WorkflowExecution has no RunId or WorkflowId")
        }
        return envelope
    }

    /// Decodes a body into its format and root node, without interpreting it.
    ///
    /// For XML the root element's name is dropped; for JSON a `{"Response": {…}}` wrapper is not
    /// removed. ``CINodeXML/decode(_:limits:)`` keeps the XML root name.
    public static func decodeTree(
        _ body: [UInt8],
        limits: CIDecodingLimits = .init()
    ) throws(CallbackDecodingError) -> (format: CallbackFormat, root: CINode) {
        try decodeTree(body, detectedFormat: detectFormat(body), limits: limits)
    }

    static func decodeTree(
        _ body: [UInt8], detectedFormat: CallbackFormat?, limits: CIDecodingLimits
    ) throws(CallbackDecodingError) -> (format: CallbackFormat, root: CINode) {
        guard let format = detectedFormat else {
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

    static func envelope(
        from decodedRoot: CINode, format: CallbackFormat, limits: CIFieldLimits, maxJobs: Int = .max
    ) throws(CallbackDecodingError) -> CallbackEnvelope {
        var root = decodedRoot
        if format == .json, let wrapped = root["Response"], case .element = wrapped,
            !root.fields.contains(where: { envelopeKeys.contains($0.name) })
        {
            root = wrapped
        }
        try requireSingle(["EventName", "WorkflowExecution", "NextToken"], in: root, path: nil)
        var result = CallbackEnvelope(format: format)
        var jobIndex = 0
        for field in root.fields {
            switch field.name {
            case "EventName":
                result.eventName = nonEmpty(field.value)
                if let name = result.eventName { try checkLength(name, limit: limits.eventName, field: "EventName") }
            case "JobsDetail":
                guard jobIndex < maxJobs else { throw .limit("more than \(maxJobs) JobsDetail in one body") }
                result.jobs.append(try jobsDetail(field.value, index: jobIndex, limits: limits))
                jobIndex += 1
            case "WorkflowExecution":
                result.workflowExecution = workflowExecution(field.value)
            case "NextToken":
                result.nextToken = nonEmpty(field.value)
            case "NonExistJobIds":
                appendJobIDs(in: field.value, to: &result.nonExistJobIDs)
            default:
                continue
            }
        }
        return result
    }

    /// Refuses a node in which one of `names` occurs more than once: each is read as one value, and with
    /// two the typed model (the first) and the stored detail (an array of both) would disagree.
    /// Names CI documents as lists (`JobsDetail`, `CosHeaders`, `Tasks`, …) are never passed here.
    private static func requireSingle(_ names: [String], in node: CINode, path: String?, index: Int? = nil) throws(CallbackDecodingError) {
        guard case .element(let fields) = node else { return }
        for (position, field) in fields.enumerated() where names.contains(field.name) {
            for later in fields[(position + 1)...] where later.name == field.name {
                let name = path.map { "\($0).\(field.name)" } ?? field.name
                let subject = index.map { "JobsDetail[\($0)] has" } ?? "the body has"
                throw CallbackDecodingError(code: .duplicateField, reason: "\(subject) more than one \(name)")
            }
        }
    }

    /// Refuses an identifier over its limit, naming the field and the limit (never the value).
    private static func checkLength(_ value: String, limit: Int, field: String) throws(CallbackDecodingError) {
        let length = value.utf8.count
        guard length <= limit else {
            throw CallbackDecodingError(code: .fieldTooLong, reason: "\(field) is \(length) bytes; the limit is \(limit)")
        }
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

    /// The JobsDetail fields read as one value each; any other name may repeat (it stays in `normalized`).
    private static let singleValuedFields: [String] = [
        "JobId", "State", "Code", "Message", "Tag", "SubTag", "QueueId", "QueueType", "Progress", "CreationTime", "StartTime",
        "EndTime", "Input", "Operation", "Workflow",
    ]

    private static func jobsDetail(_ node: CINode, index: Int, limits: CIFieldLimits) throws(CallbackDecodingError) -> JobsDetail {
        try requireSingle(singleValuedFields, in: node, path: nil, index: index)
        guard let jobID = node["JobId"]?.text.map(trimmed), !jobID.isEmpty else {
            throw CallbackDecodingError(code: .missingField, reason: "JobsDetail[\(index)] has no JobId")
        }
        guard let state = node["State"]?.text.map(trimmed), !state.isEmpty else {
            throw CallbackDecodingError(code: .missingField, reason: "JobsDetail[\(index)] has no State")
        }
        func check(_ value: String?, _ field: String, limit: Int = limits.identifier) throws(CallbackDecodingError) {
            if let value { try checkLength(value, limit: limit, field: "JobsDetail[\(index)].\(field)") }
        }
        try check(jobID, "JobId", limit: limits.jobID)
        try check(state, "State", limit: limits.state)
        var job = JobsDetail(jobID: jobID, state: JobState(rawValue: state), normalized: node)
        var normalizedFields: [CIField] = []
        normalizedFields.reserveCapacity(node.fields.count)

        // One pass over the children; requireSingle has made sure each single-valued name occurs once.
        for field in node.fields {
            let value = field.value
            switch field.name {
            case "Code":
                job.code = nonEmpty(value)
                try check(job.code, "Code")
            case "Message": job.message = nonEmpty(value)
            case "Tag":
                job.tag = nonEmpty(value)
                try check(job.tag, "Tag")
            case "SubTag":
                job.subTag = nonEmpty(value)
                try check(job.subTag, "SubTag")
            case "QueueId":
                job.queueID = nonEmpty(value)
                try check(job.queueID, "QueueId")
            case "QueueType":
                job.queueType = nonEmpty(value)
                try check(job.queueType, "QueueType")
            case "Progress": job.progress = integer(value)
            case "Input":
                try requireSingle(["BucketId", "Bucket", "Object", "Region"], in: value, path: "Input", index: index)
                job.input = jobInput(value)
                try check(nonEmpty(value["BucketId"]), "Input.BucketId")
                try check(nonEmpty(value["Bucket"]), "Input.Bucket")
                try check(job.input?.region, "Input.Region")
            case "Workflow":
                try requireSingle(["RunId", "WorkflowId", "WorkflowName", "Name"], in: value, path: "Workflow", index: index)
                job.workflow = jobWorkflow(value)
                try check(job.workflow?.workflowID, "Workflow.WorkflowId")
                try check(job.workflow?.runID, "Workflow.RunId")
            case "Operation":
                try requireSingle(["ExtractDigitalWatermark", "UserData", "JobLevel"], in: value, path: "Operation", index: index)
                if let extract = value["ExtractDigitalWatermark"] {
                    let path = "Operation.ExtractDigitalWatermark"
                    try requireSingle(["Type", "Version", "Message"], in: extract, path: path, index: index)
                    if !extract.fields.isEmpty {
                        job.watermark = ExtractedWatermark(
                            type: nonEmpty(extract["Type"]),
                            version: nonEmpty(extract["Version"]),
                            message: nonEmpty(extract["Message"])
                        )
                        try check(job.watermark?.type, path + ".Type")
                        try check(job.watermark?.version, path + ".Version")
                    }
                }
                job.userData = nonEmpty(value["UserData"])
                job.jobLevel = value["JobLevel"].flatMap(integer)
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
                case "CreationTime": job.creationTime = timestamp
                case "StartTime": job.startTime = timestamp
                default: job.endTime = timestamp
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
