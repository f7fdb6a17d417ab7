import CIModel
import Foundation
import HTTPWire
import JobStore
import Logging

extension CallbackApplication {
    /// `POST /v1/callbacks`: decode, store durably, and only then answer 200.
    ///
    /// A body we cannot accept (including a well-formed document that is no CI callback) is still kept
    /// (capped) for operators and answered 400; a `WorkflowFinish` (no jobs) is stored and answered 200,
    /// so CI never retries it forever.
    func ingestCallback(_ request: HTTPRequest, logger: Logger) async throws -> HTTPResponse {
        let received = ReceivedBody(
            bytes: request.body,
            contentType: request.headers["Content-Type"],
            remoteAddress: request.remoteAddress
        )
        // Only what is written and answered outlives this block: the decoded tree (several times the size of
        // a body of many small elements) is gone before the wait for the commit.
        let prepared: JobStore.PreparedIngest
        let format: CallbackFormat
        let eventName: String?
        // Detected once: a rejected body is stored and counted by its format too.
        let detectedFormat = CallbackDecoder.detectFormat(request.body)
        do {
            let envelope = try CallbackDecoder.decodeCallback(request.body, detectedFormat: detectedFormat)
            format = envelope.format
            eventName = envelope.eventName
            prepared = store.prepareIngest(envelope, body: received)
        } catch {
            do {
                try await store.recordRejected(received, format: detectedFormat, reason: error.reason)
            } catch {
                // The answer is 400 either way: the body is wrong, and a retry of it would be too.
                logger.error("could not keep a rejected callback", metadata: ["error": "\(error)"])
            }
            logger.notice("callback rejected", metadata: ["callback.reason": "\(error.reason)"])
            metrics.recordCallback(format: detectedFormat, outcome: .rejected)
            throw APIError.invalidCallback(error.reason)
        }

        let writeStarted = ContinuousClock.now
        let result: IngestResult
        do {
            result = try await store.ingest(prepared)
        } catch let error as StoreUnavailableError {
            // Say only what is known: "nothing was stored" holds unless a commit was sent and its answer lost.
            logger.warning("database unavailable", metadata: ["error": "\(error)"])
            if error.reason == .outcomeUnknown {
                throw APIError.outcomeUnknown(retryAfterSeconds: configuration.retryAfterSeconds)
            }
            throw APIError.databaseUnavailable(error.reason, nothingStored: true, retryAfterSeconds: configuration.retryAfterSeconds)
        }
        metrics.recordCommit(duration: writeStarted.duration(to: .now))
        let outcome: CallbackOutcome = result.duplicate ? .duplicate : (result.jobs.isEmpty ? .noJobs : .accepted)
        metrics.recordCallback(format: format, outcome: outcome)
        if !result.duplicate {
            for job in result.jobs { metrics.recordJobState(job.receivedState) }
        }
        logger.debug(
            "callback stored",
            metadata: [
                "callback.id": "\(result.callbackID)", "callback.format": "\(format.rawValue)",
                "callback.duplicate": "\(result.duplicate)", "callback.jobs": "\(result.jobs.count)",
            ]
        )
        return .json { json in
            if result.jobs.count == 1, let job = result.jobs.first {
                writeReceipt(job, into: &json)
            } else {
                json.key("Jobs")
                json.beginArray()
                for job in result.jobs {
                    json.beginObject()
                    writeReceipt(job, into: &json)
                    json.endObject()
                }
                json.endArray()
                json.member("EventName", eventName)
            }
            json.member("Duplicate", result.duplicate)
            json.member("CallbackId", Int(result.callbackID))
        }
    }

    /// `Verification: "pending"` marks a final state held until CI confirms it (`VERIFY_CALLBACKS`); its
    /// `CurrentState` is the state before it, `null` for a job known only from held callbacks.
    private func writeReceipt(_ job: JobReceipt, into json: inout JSONWriter) {
        json.member("JobId", job.jobID)
        json.member("State", job.receivedState.rawValue)
        json.member("CurrentState", job.currentState?.rawValue)
        if job.heldForVerification {
            json.member("Verification", CallbackVerification.pending.rawValue)
        }
    }
}
