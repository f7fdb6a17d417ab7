import CIModel
import Testing

/// Issue 10 §2: a 1 MiB body of 15,000 tiny JobsDetail cost three times its size while waiting for its
/// commit and a statement that ran into the statement timeout (`scripts/chaos memory`, json-many-jobs).
/// A body holds at most `CIDecodingLimits.maxJobs` (1,000) JobsDetail.
@Suite("Model job count limit")
struct ModelJobCountLimitTests {
    private static func json(jobs: Int) -> [UInt8] {
        let items = (0..<jobs).map { #"{"JobId":"j\#($0)","State":"Success"}"# }
        return Array(#"{"JobsDetail":[\#(items.joined(separator: ","))]}"#.utf8)
    }

    private static func xml(jobs: Int) -> [UInt8] {
        let items = (0..<jobs).map { "<JobsDetail><JobId>j\($0)</JobId><State>Success</State></JobsDetail>" }
        return Array("<Response>\(items.joined())</Response>".utf8)
    }

    @Test(arguments: [false, true])
    func decoder_AThousandJobs_AreAccepted(xml: Bool) throws {
        let envelope = try CallbackDecoder.decodeCallback(xml ? Self.xml(jobs: 1_000) : Self.json(jobs: 1_000))
        #expect(envelope.jobs.count == 1_000)
    }

    @Test(arguments: [false, true])
    func decoder_MoreThanAThousandJobs_AreRefusedAsOverALimit(xml: Bool) {
        #expect {
            try CallbackDecoder.decodeCallback(xml ? Self.xml(jobs: 1_001) : Self.json(jobs: 1_001))
        } throws: { error in
            let error = error as? CallbackDecodingError
            return error?.code == .limitExceeded && error?.reason == "more than 1000 JobsDetail in one body"
        }
    }
}
