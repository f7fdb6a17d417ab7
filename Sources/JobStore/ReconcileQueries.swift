import CIModel
import Foundation
import PostgresLibPQ
import TimeUnits

/// A job the store has not seen reach a final state, as the reconciler needs it.
public struct OpenJob: Sendable, Hashable {
    public var jobID: String
    /// The state stored locally; the reconciler counts a job as corrected when CI reports another.
    public var state: JobState

    public init(jobID: String, state: JobState) {
        self.jobID = jobID
        self.state = state
    }
}

extension JobStore {
    /// Jobs not final locally, last heard of before `lastHeardBefore` and first seen after
    /// `firstSeenAfter`, oldest news first, at most `limit`.
    ///
    /// The lower bound keeps a job CI has forgotten (reported in `NonExistJobIds`) from being asked
    /// about forever: once it is older than the window, it drops out. The partial index
    /// `ci_jobs_open_idx` (last_received_at WHERE NOT is_final) serves the scan.
    public func openJobs(lastHeardBefore: Date, firstSeenAfter: Date, limit: Int) async throws -> [OpenJob] {
        let before = Self.epochMicros(lastHeardBefore)
        let after = Self.epochMicros(firstSeenAfter)
        let limit = max(limit, 1)
        return try await withConnection { connection in
            try connection.query(
                """
                SELECT job_id, state FROM ci_jobs
                WHERE NOT is_final
                  AND last_received_at < 'epoch'::timestamptz + \(before)::bigint * interval '1 microsecond'
                  AND first_received_at > 'epoch'::timestamptz + \(after)::bigint * interval '1 microsecond'
                ORDER BY last_received_at
                LIMIT \(limit)
                """
            ).strict("open jobs") { row throws(StoredRowError) in
                OpenJob(jobID: try row.string("job_id"), state: JobState(rawValue: try row.string("state")))
            }
        }
    }

    /// The stored state of each of `jobIDs` the store knows; unknown ids are absent from the answer.
    public func states(of jobIDs: [String]) async throws -> [String: JobState] {
        guard !jobIDs.isEmpty else { return [:] }
        // One text parameter, split server-side: a JobId holds only letters, digits, '-' and '_'.
        let joined = jobIDs.joined(separator: ",")
        return try await withConnection { connection in
            var states: [String: JobState] = [:]
            for row in try connection.query(
                "SELECT job_id, state FROM ci_jobs WHERE job_id = ANY (string_to_array(\(joined)::text, ','))"
            ) {
                let row = StrictRow(row, read: "job states")
                states[try row.string("job_id")] = JobState(rawValue: try row.string("state"))
            }
            return states
        }
    }

    static func epochMicros(_ date: Date) -> Int64 {
        date.microsecondsSince1970
    }
}
