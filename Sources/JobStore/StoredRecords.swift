import CIModel
import Foundation

/// Where a stored JobsDetail came from: CI calling us, our own submit request, or our reconciler
/// asking CI about a job.
public enum CallbackSource: String, Sendable, Hashable, CaseIterable {
    case callback
    case submit
    case reconcile
}

/// A body as it reached the service, before or after decoding.
public struct ReceivedBody: Sendable {
    public var bytes: [UInt8]
    public var contentType: String?
    public var remoteAddress: String?
    public var receivedAt: Date
    public var source: CallbackSource

    public init(bytes: [UInt8], contentType: String?, remoteAddress: String?, receivedAt: Date = Date(), source: CallbackSource = .callback) {
        self.bytes = bytes
        self.contentType = contentType
        self.remoteAddress = remoteAddress
        self.receivedAt = receivedAt
        self.source = source
    }
}

/// What storing one callback did.
public struct IngestResult: Sendable, Hashable {
    /// The row in `ci_callbacks` holding the body (the earlier row for a duplicate).
    public var callbackID: Int64
    /// The same bytes had been stored before: nothing but the delivery counter changed.
    public var duplicate: Bool
    public var jobs: [JobReceipt]
}

/// One job of a stored callback.
public struct JobReceipt: Sendable, Hashable {
    public var jobID: String
    /// The state this callback reported.
    public var receivedState: JobState
    /// The job's state after the callback: differs from `receivedState` when precedence kept a final state
    /// or the callback was held for verification; nil when the job has no state yet (its only callbacks
    /// are held).
    public var currentState: JobState?
    /// Whether this callback's JobsDetail became the job's current one.
    public var applied: Bool
    /// Whether the reported state (a final one) waits for CI to confirm it (`VERIFY_CALLBACKS`).
    public var heldForVerification: Bool

    public init(jobID: String, receivedState: JobState, currentState: JobState?, applied: Bool, heldForVerification: Bool = false) {
        self.jobID = jobID
        self.receivedState = receivedState
        self.currentState = currentState
        self.applied = applied
        self.heldForVerification = heldForVerification
    }
}

/// A job as the lookup API shows it.
public struct StoredJob: Sendable, Hashable {
    public var jobID: String
    public var state: JobState
    public var tag: String?
    /// The normalised JobsDetail as JSON text (PostgreSQL's jsonb rendering).
    public var detailJSON: String
    public var hasWatermark: Bool
    public var watermarkType: String?
    public var watermarkVersion: String?
    public var watermarkMessage: String?
    /// RFC 3339 UTC, microsecond precision.
    public var firstReceivedAt: String
    public var lastReceivedAt: String
    public var stateChangedAt: String
    /// Distinct callbacks (bodies) received for the job.
    public var callbackCount: Int
    /// Where the job's current JobsDetail came from.
    public var stateSource: CallbackSource
}

/// One entry of a job's history.
///
/// The history outlives the raw bodies (`JOB_RETENTION` against `CALLBACK_RETENTION`): once retention has
/// dropped the body, ``body`` is nil and only what the history itself holds is known.
public struct StoredCallback: Sendable, Hashable {
    public var callbackID: Int64
    public var receivedAt: String
    /// What the stored body says about itself; nil when retention has pruned it.
    public var body: StoredCallbackBodyInfo?
    /// The state this callback reported for the job, and whether it became current.
    public var state: JobState
    public var applied: Bool
    /// Where CI's confirmation of the reported state stands; nil when it was never asked for.
    public var verification: CallbackVerification?
    /// What CI answered when it contradicted the callback (`CI reports Running`).
    public var verificationNote: String?
}

/// The stored body's own columns, shown in a job's history while the body is kept.
public struct StoredCallbackBodyInfo: Sendable, Hashable {
    public var lastReceivedAt: String
    public var deliveryCount: Int
    /// Nil for a rejected body that is neither XML nor JSON.
    public var format: CallbackFormat?
    public var contentType: String?
    public var eventName: String?
    public var source: CallbackSource
    public var bodySize: Int
}

/// What became of a stored callback (the `outcome` column).
public enum StoredOutcome: String, Sendable, Hashable, CaseIterable {
    /// Stored, with at least one job.
    case accepted
    /// Stored, with no job (WorkflowFinish).
    case noJobs = "no_jobs"
    /// Refused with 400; the body is kept (capped) for operators and `reprocess`.
    case rejected
}

/// A callback body lookup's answer.
public enum CallbackBodyLookup: Sendable, Hashable {
    /// The body, byte for byte.
    case stored(StoredBody)
    /// The job's history names the callback, but retention (`CALLBACK_RETENTION`) has dropped its body.
    case pruned
    /// The job has no such callback.
    case unknown
}

/// Where the check of a callback's final state against CI (`VERIFY_CALLBACKS`) stands.
public enum CallbackVerification: String, Sendable, Hashable {
    /// Not yet confirmed: the state is in the history but not the job's.
    case pending
    /// CI reports the same state; the callback was applied under the usual precedence.
    case confirmed
    /// CI reports another state or does not know the job; the callback stays in the history only.
    case contradicted
}

/// A stored body, byte for byte.
public struct StoredBody: Sendable, Hashable {
    public var bytes: [UInt8]
    public var contentType: String?
    /// Nil for a rejected body that is neither XML nor JSON.
    public var format: CallbackFormat?
    public var truncated: Bool
}

/// Filters and page position of a job listing.
public struct JobListQuery: Sendable, Hashable {
    public var state: JobState?
    public var tag: String?
    public var queueID: String?
    /// Jobs first received at or after this instant.
    public var since: Date?
    /// Jobs first received before this instant.
    public var until: Date?
    public var limit: Int
    public var cursor: JobListCursor?

    public static let defaultLimit = 50
    public static let maximumLimit = 500

    public init(
        state: JobState? = nil, tag: String? = nil, queueID: String? = nil, since: Date? = nil, until: Date? = nil,
        limit: Int = JobListQuery.defaultLimit, cursor: JobListCursor? = nil
    ) {
        self.state = state
        self.tag = tag
        self.queueID = queueID
        self.since = since
        self.until = until
        self.limit = limit
        self.cursor = cursor
    }
}

/// Where a page of the newest-first job listing ends: the last job's first receipt time and JobId.
///
/// Opaque to clients: it travels as base64url text.
public struct JobListCursor: Sendable, Hashable {
    /// Microseconds since the Unix epoch: exact, unlike a `Date`'s floating point.
    public var firstReceivedMicros: Int64
    public var jobID: String

    public init(firstReceivedMicros: Int64, jobID: String) {
        self.firstReceivedMicros = firstReceivedMicros
        self.jobID = jobID
    }

    /// `base64url("<micros>:<jobID>")`.
    public var token: String { Base64URL.encode("\(firstReceivedMicros):\(jobID)") }

    /// Parses a token made by `token`; nil for anything else.
    public init?(token: String) {
        guard let text = Base64URL.decode(token), let colon = text.firstIndex(of: ":"), let micros = Int64(text[..<colon]) else { return nil }
        let jobID = String(text[text.index(after: colon)...])
        // Positions this API issues lie in years 1 through 9999; a forged one beyond PostgreSQL's
        // timestamp range would otherwise fail the query (a 500) instead of being refused.
        guard !jobID.isEmpty, Self.issuableMicros.contains(micros) else { return nil }
        self.init(firstReceivedMicros: micros, jobID: jobID)
    }

    /// 0001-01-01T00:00:00Z through 9999-12-31T23:59:59.999999Z, in microseconds since the Unix epoch.
    static let issuableMicros: ClosedRange<Int64> = -62_135_596_800_000_000...253_402_300_799_999_999
}

/// One page of a job listing.
public struct JobPage: Sendable, Hashable {
    public var jobs: [StoredJob]
    /// Present when more jobs follow.
    public var nextCursor: JobListCursor?
}

/// Which page of a job's history to read.
public struct CallbackHistoryQuery: Sendable, Hashable {
    public var limit: Int
    /// Where the previous page ended; nil for the first page.
    public var cursor: CallbackHistoryCursor?

    /// Larger than any ordinary job's history (a handful of callbacks), so a client that never pages still
    /// sees every callback of such a job, as before paging existed.
    public static let defaultLimit = 100
    public static let maximumLimit = 1000

    public init(limit: Int = CallbackHistoryQuery.defaultLimit, cursor: CallbackHistoryCursor? = nil) {
        self.limit = limit
        self.cursor = cursor
    }
}

/// Where a page of a job's history ends: the last callback's id (the history is in `callback_id` order).
///
/// Opaque to clients: it travels as base64url text.
public struct CallbackHistoryCursor: Sendable, Hashable {
    public var callbackID: Int64

    public init(callbackID: Int64) {
        self.callbackID = callbackID
    }

    /// `base64url("c:<callbackID>")`.
    public var token: String { Base64URL.encode("c:\(callbackID)") }

    /// Parses a token made by `token`; nil for anything else.
    public init?(token: String) {
        guard let text = Base64URL.decode(token), text.hasPrefix("c:"), let id = Int64(text.dropFirst(2)), id >= 0 else { return nil }
        self.init(callbackID: id)
    }
}

/// One page of a job's history.
public struct CallbackPage: Sendable, Hashable {
    public var callbacks: [StoredCallback]
    /// Present when more callbacks follow.
    public var nextCursor: CallbackHistoryCursor?
}

/// The unpadded URL-safe base64 that page cursors travel in.
public enum Base64URL {
    public static func encode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The UTF-8 text of a token of at most 1 KiB; nil for anything else.
    public static func decode(_ token: String) -> String? {
        guard token.utf8.count <= 1024 else { return nil }
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64) else { return nil }
        return String(data: data, encoding: .utf8)
    }
}
