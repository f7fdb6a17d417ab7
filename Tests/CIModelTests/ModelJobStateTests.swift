import CIModel
import Testing

// JobState precedence: every pair of states, against a table written out by hand.

private let states: [JobState] = [.submitted, .running, .pause, JobState(rawValue: "Queued"), .success, .failed, .cancel]

/// allowsReplacement[stored][incoming], rows and columns in the order of `states`.
private let replacementTable: [[Bool]] = [
    //            Sub    Run    Pause  Queued Succ   Fail   Cancel      (incoming)
    /* Sub    */ [true, true, true, true, true, true, true],
    /* Run    */ [false, true, true, true, true, true, true],
    /* Pause  */ [false, true, true, true, true, true, true],
    /* Queued */ [false, true, true, true, true, true, true],
    /* Succ   */ [false, false, false, false, true, true, true],
    /* Fail   */ [false, false, false, false, true, true, true],
    /* Cancel */ [false, false, false, false, true, true, true],
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
