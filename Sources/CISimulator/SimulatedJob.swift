import CIClient
import CIModel
import Foundation

/// One job the simulator created, with its whole timeline fixed at submission.
public struct SimulatedJob: Sendable, Hashable {
    /// `j` + 32 lowercase hex digits, like CI's media jobs.
    public var jobID: String
    /// Creation order, from 1; list paging is by this order.
    public var sequence: Int
    /// `Tag`; always `ExtractDigitalWatermark`.
    public var tag: String
    /// `Input/Object`.
    public var object: String
    /// `Operation/UserData`.
    public var userData: String?
    /// `Operation/JobLevel`.
    public var jobLevel: Int
    /// `QueueId`.
    public var queueID: String
    /// Where callbacks go; `nil` for none.
    public var callbackURL: String?
    /// The callbacks' format.
    public var callbackFormat: CallbackFormat
    /// When the job was submitted.
    public var creationTime: Date
    /// When it becomes `Running`.
    public var startTime: Date
    /// When it reaches ``finalState``.
    public var endTime: Date
    /// `Success`, or `Failed` for an object whose key contains `missing`.
    public var finalState: JobState
    /// The final `Code`: `Success` or `ResourceNotFound`.
    public var finalCode: String
    /// The final top-level `Message`: `done`, or the failure's text.
    public var finalMessage: String
    /// The extracted watermark (`Operation/ExtractDigitalWatermark/Message`) once successful.
    public var watermarkMessage: String?
    /// Whether the final callback is withheld.
    public var dropsFinalCallback: Bool
    /// Whether each callback body is sent twice.
    public var duplicatesCallbacks: Bool
    /// Whether a `Running` callback follows the final one.
    public var sendsLateRunningCallback: Bool

    /// The state at `date`: `Submitted`, then `Running` from ``startTime``, then ``finalState`` from ``endTime``.
    public func state(at date: Date) -> JobState {
        if date >= endTime { return finalState }
        if date >= startTime { return .running }
        return .submitted
    }

    /// The JobsDetail at `state`, fields in CI's API order; unset times are `-`, as CI writes them.
    func jobsDetail(in state: JobState, utcOffsetSeconds: Int) -> CINode {
        let isFinal = state == finalState
        let started = state != .submitted
        func time(_ date: Date) -> String { CITime.format(date, utcOffsetSeconds: utcOffsetSeconds) }
        var extract: [CIField] = [CIField(name: "Type", value: .text("Text")), CIField(name: "Version", value: .text("V1"))]
        if isFinal { extract.append(CIField(name: "Message", value: .text(watermarkMessage ?? ""))) }
        var operation: [CIField] = [CIField(name: "ExtractDigitalWatermark", value: .element(extract))]
        if let userData { operation.append(CIField(name: "UserData", value: .text(userData))) }
        operation.append(CIField(name: "JobLevel", value: .text(String(jobLevel))))
        let fields: [CIField] = [
            CIField(name: "Code", value: .text(isFinal ? finalCode : "Success")),
            CIField(name: "Message", value: .text(isFinal ? finalMessage : "")),
            CIField(name: "JobId", value: .text(jobID)),
            CIField(name: "State", value: .text(state.rawValue)),
            CIField(name: "Progress", value: .text(isFinal ? "100" : started ? "50" : "0")),
            CIField(name: "CreationTime", value: .text(time(creationTime))),
            CIField(name: "StartTime", value: .text(started ? time(startTime) : "-")),
            CIField(name: "EndTime", value: .text(isFinal ? time(endTime) : "-")),
            CIField(name: "QueueId", value: .text(queueID)),
            CIField(name: "Tag", value: .text(tag)),
            CIField(
                name: "Input",
                value: .element([
                    CIField(name: "BucketId", value: .text(bucketID)),
                    CIField(name: "Object", value: .text(object)),
                    CIField(name: "Region", value: .text(region)),
                ])),
            CIField(name: "Operation", value: .element(operation)),
        ]
        return .element(fields)
    }

    /// Kept out of the public surface: they are the simulator's, the same for every job.
    var bucketID: String
    var region: String
}

/// The bodies the simulator writes.
enum SimulatorDocuments {
    /// `<Response><JobsDetail>…</JobsDetail>…</Response>` with optional trailing fields.
    static func response(jobs: [CINode], trailing: [CIField] = []) -> [UInt8] {
        let fields = jobs.map { CIField(name: "JobsDetail", value: $0) } + trailing
        return Array(CINodeXML.encode(.element(fields), rootName: "Response").utf8)
    }

    /// A TaskFinish callback as CI sends it (REFERENCE §2): fields in alphabetical order; XML wrapped in
    /// `<Response>` with `EventName`; JSON without the wrapper, `JobsDetail` an object or a one-element array.
    static func callback(jobsDetail: CINode, format: CallbackFormat, jobsDetailAsArray: Bool) -> [UInt8] {
        let root = CINode.element([
            CIField(name: "EventName", value: .text("TaskFinish")),
            CIField(name: "JobsDetail", value: sortedAlphabetically(jobsDetail)),
        ])
        switch format {
        case .xml:
            return Array(CINodeXML.encode(root, rootName: "Response").utf8)
        case .json:
            return Array(CINodeJSON.encode(root, arrayNames: jobsDetailAsArray ? ["JobsDetail"] : []).utf8)
        }
    }

    private static func sortedAlphabetically(_ node: CINode) -> CINode {
        guard case .element(let fields) = node else { return node }
        return .element(
            fields.map { CIField(name: $0.name, value: sortedAlphabetically($0.value)) }
                .enumerated().sorted { ($0.element.name, $0.offset) < ($1.element.name, $1.offset) }.map(\.element)
        )
    }
}
