import CIModel

/// What re-applying one stored callback does to one job it names, decided without I/O.
///
/// The rule is ingest's precedence rule replayed in receive order: had the callbacks arrived in the order
/// they were received, a later callback replaces the current JobsDetail when its state ranks at least as
/// high, and an earlier one only when it ranks strictly higher (the later one would otherwise have
/// replaced it back). The current callback itself always "replaces" its own reading, so a decoder fix
/// refreshes the job's columns. Whatever is already as decided stays untouched, so a second run changes
/// nothing.
public enum ReprocessDecision: Sendable, Hashable {
    /// Write the job's columns from this callback; `newEvent` when the history had no entry for it.
    case apply(newEvent: Bool)
    /// Only add the history entry (not applied) and count the callback.
    case record
    /// The history has the entry and precedence keeps another callback current.
    case keep
    /// The entry waits for, or was refused by, CI's verification (`VERIFY_CALLBACKS`): the verifier decides.
    case skipVerification

    /// The job as stored, as far as the decision needs it.
    public struct Current: Sendable, Hashable {
        /// The callback whose JobsDetail is the job's.
        public var callbackID: Int64
        public var stateRank: Int
        /// That callback's receive time, microseconds since the epoch; nil when its history entry is gone.
        public var receivedMicros: Int64?

        public init(callbackID: Int64, stateRank: Int, receivedMicros: Int64?) {
            self.callbackID = callbackID
            self.stateRank = stateRank
            self.receivedMicros = receivedMicros
        }
    }

    /// - Parameters:
    ///   - incoming: The state the current decoder reads from the callback for this job.
    ///   - callbackID: The callback, and `receivedMicros` its receive time.
    ///   - hasEvent: Whether the history already has the entry (job, callback).
    ///   - verification: The entry's verification, if any (`pending`, `confirmed`, `contradicted`).
    ///   - current: The job row; nil when there is none.
    public static func decide(
        incoming: JobState, callbackID: Int64, receivedMicros: Int64, hasEvent: Bool, verification: String?, current: Current?
    ) -> ReprocessDecision {
        if verification == "pending" || verification == "contradicted" { return .skipVerification }
        let wins: Bool
        if let current {
            if current.callbackID == callbackID {
                wins = true
            } else {
                let later = (receivedMicros, callbackID) > (current.receivedMicros ?? .min, current.callbackID)
                wins = later ? incoming.precedence >= current.stateRank : incoming.precedence > current.stateRank
            }
        } else {
            // A history entry without a job row: JOB_RETENTION deleted the job, and reprocessing does not
            // bring it back. Without either, the job is new (a body that used to be refused).
            return hasEvent ? .keep : .apply(newEvent: true)
        }
        if wins { return .apply(newEvent: !hasEvent) }
        return hasEvent ? .keep : .record
    }
}
