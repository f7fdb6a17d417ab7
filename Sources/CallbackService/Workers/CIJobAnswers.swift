import CIClient
import CIModel
import JobStore

/// What the workers that ask CI about jobs share: which JobIds CI can be asked about, and how its answers
/// are stored.
///
/// The ``Reconciler`` (sweeps of open and recently finished jobs) and the ``CallbackVerifier`` (CI's
/// answer about a job whose callback it contradicted) both store CI's answers here, the one way, so an
/// answer from either is recorded like a callback (source `reconcile`) under the same deduplication and
/// precedence rules.
enum CIJobAnswers {
    /// Stores the jobs of `response` whose state differs from `known` (and, when `discover`, those the
    /// store has never seen), with the response body verbatim as the history entry (source `reconcile`).
    /// An unchanged answer is not stored: a long job would otherwise grow its history every sweep.
    static func storeChanged(
        _ response: CIResponse, known: [String: JobState], discover: Bool, into store: JobStore
    ) async throws -> (corrected: Int, discovered: Int) {
        var jobs: [JobsDetail] = []
        var discovered = 0
        for job in response.envelope.jobs {
            if let local = known[job.jobID] {
                guard local != job.state, !local.isFinal else { continue }
            } else {
                guard discover else { continue }
                discovered += 1
            }
            jobs.append(job)
        }
        guard !jobs.isEmpty else { return (0, 0) }
        var envelope = response.envelope
        envelope.jobs = jobs
        let contentType = CallbackDecoder.detectFormat(response.body) == .json ? "application/json" : "application/xml"
        let result = try await store.ingest(
            envelope, body: ReceivedBody(bytes: response.body, contentType: contentType, remoteAddress: nil, source: .reconcile))
        var corrected = 0
        for receipt in result.jobs where known[receipt.jobID] != nil && receipt.currentState != known[receipt.jobID] {
            corrected += 1
        }
        return (corrected, discovered)
    }

    /// What asking CI about one job came to.
    enum DescribeOutcome: Sendable, Hashable {
        /// CI's answer was stored: it differed from the stored state, or the job was new here.
        case changed
        case unchanged
        /// CI reports the JobId in `NonExistJobIds`.
        case unknownToCI
    }

    /// Asks CI about one job now (the console's "describe in CI now") and stores a changed answer as a
    /// reconcile sweep does (``storeChanged(_:known:discover:into:)``).
    /// - Throws: ``CIClientError`` when CI cannot be asked; store errors.
    static func describe(jobID: String, client: CIClient, store: JobStore) async throws -> DescribeOutcome {
        let response = try await client.describeJobs([jobID])
        if response.envelope.nonExistJobIDs.contains(jobID) { return .unknownToCI }
        let known = try await store.states(of: [jobID])
        let stored = try await storeChanged(response, known: known, discover: true, into: store)
        return stored.corrected + stored.discovered > 0 ? .changed : .unchanged
    }

    /// Letters, digits, `-` and `_`, at most 64: what CI issues and what DescribeMediaJob accepts.
    static func isAskable(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            }
    }
}
