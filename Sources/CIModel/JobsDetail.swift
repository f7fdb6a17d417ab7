/// CI's two body formats: what a received body is (``CallbackDecoder/detectFormat(_:)`` decides it from the
/// first byte) and what a submitted job asks its callbacks in (`CallBackFormat`). The raw values are CI's
/// spelling.
public enum CallbackFormat: String, Sendable, Hashable, CaseIterable {
    /// `<Response><EventName>TaskFinish</EventName><JobsDetail>…</JobsDetail></Response>`: the body starts
    /// with `<`; CI's default.
    case xml = "XML"
    /// `{"EventName":"TaskFinish","JobsDetail":…}`: the body starts with `{`.
    case json = "JSON"
}

/// One job as CI reports it in a callback or an API response (`JobsDetail`).
///
/// Typed fields cover what the service indexes and answers with; everything else stays in
/// ``normalized``. In typed optional fields an empty value (`<X/>`, `<X></X>`, `""`) reads as nil,
/// exactly like an absent one, so the XML and JSON renderings of one job decode equal.
public struct JobsDetail: Sendable, Hashable {
    /// `JobId`: the idempotency key. Never empty.
    public var jobID: String
    /// `State`. Never empty.
    public var state: JobState
    /// `Code`: `Success` or an error code; opaque text.
    public var code: String?
    /// `Message`: the job's status text (not the watermark).
    public var message: String?
    /// `Tag`: the job type, such as `ExtractDigitalWatermark`.
    public var tag: String?
    /// `SubTag`.
    public var subTag: String?
    /// `QueueId`.
    public var queueID: String?
    /// `QueueType`.
    public var queueType: String?
    /// `Progress` (0–100) when it is a decimal integer; nil when absent or not a number.
    public var progress: Int?
    /// `CreationTime`; nil when absent, `-`, empty or malformed.
    public var creationTime: CITimestamp?
    /// `StartTime`; nil when absent, `-`, empty or malformed.
    public var startTime: CITimestamp?
    /// `EndTime`; nil when absent, `-`, empty or malformed.
    public var endTime: CITimestamp?
    /// `Input`; nil when absent or empty.
    public var input: JobInput?
    /// `Operation/ExtractDigitalWatermark`; nil when absent or empty.
    public var watermark: ExtractedWatermark?
    /// `Operation/UserData`.
    public var userData: String?
    /// `Operation/JobLevel` when it is a decimal integer (`"0"` and `0` both give 0).
    public var jobLevel: Int?
    /// `Workflow`, for workflow-triggered jobs; nil when absent or empty.
    public var workflow: JobWorkflow?
    /// The whole `JobsDetail` subtree: fields as received (empty leaves kept as `""`, unknown fields
    /// kept), except the top-level `CreationTime`, `StartTime` and `EndTime`, rewritten to RFC 3339
    /// (``CITimestamp/rfc3339``) and dropped when `-` or empty. A time that does not parse is kept
    /// as received.
    public var normalized: CINode

    /// Creates a job; ``CallbackDecoder`` is the usual source.
    public init(
        jobID: String,
        state: JobState,
        code: String? = nil,
        message: String? = nil,
        tag: String? = nil,
        subTag: String? = nil,
        queueID: String? = nil,
        queueType: String? = nil,
        progress: Int? = nil,
        creationTime: CITimestamp? = nil,
        startTime: CITimestamp? = nil,
        endTime: CITimestamp? = nil,
        input: JobInput? = nil,
        watermark: ExtractedWatermark? = nil,
        userData: String? = nil,
        jobLevel: Int? = nil,
        workflow: JobWorkflow? = nil,
        normalized: CINode
    ) {
        self.jobID = jobID
        self.state = state
        self.code = code
        self.message = message
        self.tag = tag
        self.subTag = subTag
        self.queueID = queueID
        self.queueType = queueType
        self.progress = progress
        self.creationTime = creationTime
        self.startTime = startTime
        self.endTime = endTime
        self.input = input
        self.watermark = watermark
        self.userData = userData
        self.jobLevel = jobLevel
        self.workflow = workflow
        self.normalized = normalized
    }
}

/// `JobsDetail/Input`: the object the job read.
public struct JobInput: Sendable, Hashable {
    /// `BucketId` (`name-appid`), or `Bucket` where a table names it so.
    public var bucketID: String?
    /// `Object`: the object key.
    public var object: String?
    /// `Region`.
    public var region: String?

    /// Creates an input description.
    public init(bucketID: String? = nil, object: String? = nil, region: String? = nil) {
        self.bucketID = bucketID
        self.object = object
        self.region = region
    }
}

/// `Operation/ExtractDigitalWatermark`: the result of a watermark extraction.
public struct ExtractedWatermark: Sendable, Hashable {
    /// `Type`, such as `Text`.
    public var type: String?
    /// `Version`, such as `V1`.
    public var version: String?
    /// `Message`: the extracted watermark text (may be Chinese); nil when CI found none.
    public var message: String?

    /// Creates an extraction result.
    public init(type: String? = nil, version: String? = nil, message: String? = nil) {
        self.type = type
        self.version = version
        self.message = message
    }
}

/// `JobsDetail/Workflow`: the workflow run that started a job.
public struct JobWorkflow: Sendable, Hashable {
    /// `RunId`.
    public var runID: String?
    /// `WorkflowId`.
    public var workflowID: String?
    /// `WorkflowName`.
    public var workflowName: String?
    /// `Name`: the workflow node that ran the job.
    public var name: String?

    /// Creates a workflow reference.
    public init(runID: String? = nil, workflowID: String? = nil, workflowName: String? = nil, name: String? = nil) {
        self.runID = runID
        self.workflowID = workflowID
        self.workflowName = workflowName
        self.name = name
    }
}

/// `WorkflowExecution`: the body of a `WorkflowFinish` event.
public struct WorkflowExecution: Sendable, Hashable {
    /// `RunId`.
    public var runID: String?
    /// `WorkflowId`.
    public var workflowID: String?
    /// `WorkflowName`.
    public var workflowName: String?
    /// `State` of the run as a whole.
    public var state: String?
    /// `CreateTime` (CI writes it with a space: `2022-08-09 14:54:17+0800`).
    public var createTime: CITimestamp?
    /// `BucketId` of the object that triggered the run.
    public var bucketID: String?
    /// `Object` that triggered the run.
    public var object: String?
    /// `Tasks`, in document order.
    public var tasks: [WorkflowTask]

    /// Creates a workflow execution.
    public init(
        runID: String? = nil,
        workflowID: String? = nil,
        workflowName: String? = nil,
        state: String? = nil,
        createTime: CITimestamp? = nil,
        bucketID: String? = nil,
        object: String? = nil,
        tasks: [WorkflowTask] = []
    ) {
        self.runID = runID
        self.workflowID = workflowID
        self.workflowName = workflowName
        self.state = state
        self.createTime = createTime
        self.bucketID = bucketID
        self.object = object
        self.tasks = tasks
    }
}

/// One entry of `WorkflowExecution/Tasks`: a job the workflow ran.
public struct WorkflowTask: Sendable, Hashable {
    /// `Type`, such as `Transcode`.
    public var type: String?
    /// `JobId` of the job the task ran.
    public var jobID: String?
    /// `State` of that job.
    public var state: String?
    /// `Name`: the workflow node.
    public var name: String?
    /// `CreateTime`.
    public var createTime: CITimestamp?
    /// `EndTime`.
    public var endTime: CITimestamp?

    /// Creates a task entry.
    public init(
        type: String? = nil,
        jobID: String? = nil,
        state: String? = nil,
        name: String? = nil,
        createTime: CITimestamp? = nil,
        endTime: CITimestamp? = nil
    ) {
        self.type = type
        self.jobID = jobID
        self.state = state
        self.name = name
        self.createTime = createTime
        self.endTime = endTime
    }
}

/// Everything a callback body (or a DescribeMediaJob(s) / submit response) says.
public struct CallbackEnvelope: Sendable, Hashable {
    /// The body's format.
    public var format: CallbackFormat
    /// `EventName` (`TaskFinish`, `WorkflowFinish`); nil when absent or empty. Older senders omit
    /// it for TaskFinish.
    public var eventName: String?
    /// Every `JobsDetail`, in document order; empty for WorkflowFinish or any body without jobs.
    public var jobs: [JobsDetail]
    /// `WorkflowExecution`, present in WorkflowFinish events.
    public var workflowExecution: WorkflowExecution?
    /// `NextToken` of a DescribeMediaJobs page; nil when absent or empty.
    public var nextToken: String?
    /// `NonExistJobIds` of a DescribeMediaJob response (repeated elements, arrays and
    /// comma-separated lists are all accepted).
    public var nonExistJobIDs: [String]

    /// Creates an envelope.
    public init(
        format: CallbackFormat,
        eventName: String? = nil,
        jobs: [JobsDetail] = [],
        workflowExecution: WorkflowExecution? = nil,
        nextToken: String? = nil,
        nonExistJobIDs: [String] = []
    ) {
        self.format = format
        self.eventName = eventName
        self.jobs = jobs
        self.workflowExecution = workflowExecution
        self.nextToken = nextToken
        self.nonExistJobIDs = nonExistJobIDs
    }
}
