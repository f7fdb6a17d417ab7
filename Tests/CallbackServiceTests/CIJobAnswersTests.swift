import Testing

@testable import CallbackService

/// Which JobIds the workers may ask CI about: a JobId CI could not have issued (a forged callback's)
/// would make CI refuse the whole describe batch it travels in.
@Suite("CI job answers")
struct CIJobAnswersTests {
    @Test(arguments: ["j0123456789abcdef0123456789abcdef", "a-b_C9", String(repeating: "j", count: 64)])
    func askable_CIShapedJobID_IsAsked(jobID: String) {
        #expect(CIJobAnswers.isAskable(jobID))
    }

    @Test(arguments: ["", "j 1", "j/1", "j%00", "jé", String(repeating: "j", count: 65)])
    func askable_JobIDCICouldNotHaveIssued_IsNotAsked(jobID: String) {
        #expect(!CIJobAnswers.isAskable(jobID))
    }
}
