/// Bounds that keep a hostile body from costing unbounded stack, memory or time, and from carrying values
/// the store cannot hold.
///
/// Both parsers enforce the same limits; a body that exceeds one is rejected with a
/// ``CallbackDecodingError`` whose code is ``CallbackDecodingError/Code/limitExceeded`` (structure) or
/// ``CallbackDecodingError/Code/fieldTooLong`` (a field, see ``CIFieldLimits``).
public struct CIDecodingLimits: Sendable, Hashable {
    /// Maximum nesting of elements (XML) or of objects and arrays (JSON); the root counts as 1.
    /// Default: 64. Real CI bodies nest about 6 deep.
    public var maxDepth: Int
    /// Maximum number of elements (XML) or of values (JSON) in one body. Default: 100_000.
    public var maxElements: Int
    /// Maximum UTF-8 bytes of an element or attribute name (XML) or an object key (JSON). Default: 256.
    /// CI's longest names are about 30 bytes; a name becomes a key of the stored jsonb detail.
    public var maxNameBytes: Int
    /// Maximum lengths of the identifiers the store indexes or keeps in columns.
    public var fields: CIFieldLimits
    /// Maximum JobsDetail in one body. Default 1,000: a callback carries one, a DescribeMediaJobs page at
    /// most 100. Each becomes a row that the body's one statement upserts, and its record for that
    /// statement is about three times its size in the body, so 1 MiB of tiny JobsDetail (15,000 of them)
    /// cost 3 MiB to hold while waiting for the commit and a statement that ran into the statement
    /// timeout (`scripts/chaos memory`, shape json-many-jobs).
    public var maxJobs: Int

    /// Creates limits; the defaults suit CI callbacks and API responses.
    public init(
        maxDepth: Int = 64, maxElements: Int = 100_000, maxNameBytes: Int = 256, fields: CIFieldLimits = .init(), maxJobs: Int = 1_000
    ) {
        self.maxDepth = maxDepth
        self.maxElements = maxElements
        self.maxNameBytes = maxNameBytes
        self.fields = fields
        self.maxJobs = maxJobs
    }
}

/// Maximum UTF-8 bytes of the identifiers a JobsDetail carries (after surrounding whitespace is trimmed,
/// for JobId and State). A longer value refuses the body with a reason naming the field and the limit
/// (`JobsDetail[0].JobId is 3000 bytes; the limit is 128`).
///
/// Why limits at all: `JobId` is the primary key of `ci_jobs`, a key of two more indexes and the payload
/// of the `ci_job_final` NOTIFY; `State` and `QueueId` are index keys. PostgreSQL refuses a B-tree entry
/// over about 2.7 KB and a NOTIFY payload of 8,000 bytes, and a statement that fails stores nothing, so
/// without these limits such a body was answered 500 and retried forever. The limits are far above what CI
/// sends and far below what PostgreSQL refuses. Free text (`Message`, `Input.Object`, `UserData`, the
/// watermark text, names) has no limit of its own: only the body size (`MAX_BODY_BYTES`) bounds it.
public struct CIFieldLimits: Sendable, Hashable {
    /// `JobId`. Default: 128 (CI's are 33: `j` and 32 hex digits).
    public var jobID: Int
    /// `State`. Default: 32 (CI's longest, `Submitted`, is 9).
    public var state: Int
    /// The envelope's `EventName`. Default: 64 (`WorkflowFinish` is 14).
    public var eventName: Int
    /// Every other identifier: `Code`, `Tag`, `SubTag`, `QueueId`, `QueueType`, `Input.BucketId` (or
    /// `Bucket`), `Input.Region`, `Workflow.WorkflowId`, `Workflow.RunId`, and
    /// `Operation.ExtractDigitalWatermark.Type` and `.Version`. Default: 128 (CI's are at most 34).
    public var identifier: Int

    /// Creates field limits.
    public init(jobID: Int = 128, state: Int = 32, eventName: Int = 64, identifier: Int = 128) {
        self.jobID = jobID
        self.state = state
        self.eventName = eventName
        self.identifier = identifier
    }
}
