import CIModel
import Testing

// JobState precedence: every pair of states, against a table written out by hand.

private let states: [JobState] = [.submitted, .running, .pause, JobState(rawValue: "Queued"), .success, .failed, .cancel]

/// allowsReplacement[stored][incoming], rows and columns in the order of `states`.
private let replacementTable: [[Bool]] = [
    // Columns (incoming): Submitted, Running, Pause, Queued, Success, Failed, Cancel.
    [true, true, true, true, true, true, true],  // stored: Sub
    [false, true, true, true, true, true, true],  // stored: Run
    [false, true, true, true, true, true, true],  // stored: Pause
    [false, true, true, true, true, true, true],  // stored: Queued
    [false, false, false, false, true, true, true],  // stored: Succ
    [false, false, false, false, true, true, true],  // stored: Fail
    [false, false, false, false, true, true, true],  // stored: Cancel
]

@Test(arguments: states.indices, states.indices)
func jobState_AllowsReplacement_MatchesTheTable(stored: Int, incoming: Int) {
    #expect(states[stored].allowsReplacement(by: states[incoming]) == replacementTable[stored][incoming])
}

@Test func jobState_PrecedenceAndFinality() {
    #expect(states.map(\.precedence) == [1, 2, 2, 2, 3, 3, 3])
    #expect(states.map(\.isFinal) == [false, false, false, false, true, true, true])
    #expect(states.map(\.rawValue) == ["Submitted", "Running", "Pause", "Queued", "Success", "Failed", "Cancel"])
}

@Test func jobState_IsCaseSensitiveAndOpenEnded() {
    let lower = JobState(rawValue: "success")
    #expect(lower != .success)
    #expect(!lower.isFinal)
    #expect(lower.precedence == 2)
    #expect(JobState(rawValue: "Success") == .success)
    #expect(JobState.cancel.description == "Cancel")
}
