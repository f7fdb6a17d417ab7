/// A CI job state, open-ended: states CI adds later are kept verbatim and rank as in-progress.
public struct JobState: Sendable, Hashable, RawRepresentable, CustomStringConvertible {
    /// The state exactly as CI wrote it (case-sensitive, as CI's are PascalCase).
    public var rawValue: String

    /// Wraps any state text; unknown states are valid.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Accepted, waiting in the queue.
    public static let submitted = JobState(rawValue: "Submitted")
    /// Being processed.
    public static let running = JobState(rawValue: "Running")
    /// Finished successfully (final).
    public static let success = JobState(rawValue: "Success")
    /// Finished with an error (final).
    public static let failed = JobState(rawValue: "Failed")
    /// Paused (not final).
    public static let pause = JobState(rawValue: "Pause")
    /// Cancelled (final).
    public static let cancel = JobState(rawValue: "Cancel")

    /// Whether the job can no longer change: Success, Failed or Cancel.
    public var isFinal: Bool {
        self == .success || self == .failed || self == .cancel
    }

    /// Rank used to keep a job's state from moving backwards when callbacks arrive out of order:
    /// Submitted 1; Running, Pause and any unknown state 2; Success, Failed and Cancel 3.
    public var precedence: Int {
        if isFinal { return 3 }
        if self == .submitted { return 1 }
        return 2
    }

    /// Whether a stored job in this state may be overwritten by one in `incoming`.
    ///
    /// Equal ranks replace each other, so a re-delivered or corrected final state (Failed after
    /// Success) wins; a late Running or Submitted never overwrites a final state.
    public func allowsReplacement(by incoming: JobState) -> Bool {
        incoming.precedence >= precedence
    }

    /// The raw state text.
    public var description: String { rawValue }
}
