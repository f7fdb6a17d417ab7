import CIClient
import CIModel
import Foundation
import JobStore

/// Submits `ExtractDigitalWatermark` jobs to CI and stores CI's answer as each job's first state.
///
/// Shared by `POST /v1/watermark-extractions` and `ci-callbackd submit`, so both send the same request
/// and leave the same history (source `submit`).
public struct WatermarkSubmitter: Sendable {
    /// The signed client for CI's API.
    public let client: CIClient
    /// `PUBLIC_CALLBACK_URL`: where CI is told to post the job's callback; `nil` leaves it to the queue.
    public let callbackURL: String?

    /// Creates a submitter.
    public init(client: CIClient, callbackURL: String?) {
        self.client = client
        self.callbackURL = callbackURL
    }

    /// What one submission produced.
    public struct Submission: Sendable, Hashable {
        /// The JobId CI assigned.
        public var jobID: String
        /// The state CI reported (`Submitted`), or the stored one when a callback overtook the answer.
        public var state: JobState
        /// CI's `x-ci-request-id`.
        public var requestID: String?
        /// Whether the answer was stored; `false` when the submitter ran without a store.
        public var stored: Bool
    }

    /// Builds the CI request for an object, with this submitter's callback URL.
    public func request(
        object: String, userData: String?, jobLevel: Int?, callbackFormat: CallbackFormat = .json
    ) -> WatermarkExtractionRequest {
        WatermarkExtractionRequest(
            object: object, userData: userData, jobLevel: jobLevel, callbackURL: callbackURL, callbackFormat: callbackFormat)
    }

    /// Sends `request` to CI and, when `store` is given, stores the answer's JobsDetail like a callback.
    ///
    /// CI's callback may arrive before the answer is stored; the precedence rules keep the final state.
    /// - Throws: ``CIClient/WatermarkRequestError`` for an invalid request (nothing was sent),
    ///   ``CIClient/CIClientError`` when CI refused or could not be reached, or the store's error. A store
    ///   error after CI accepted means the job exists at CI: its callback or the reconciler will record it.
    public func submit(_ request: WatermarkExtractionRequest, store: JobStore?) async throws -> Submission {
        try request.validate()
        let response = try await client.submitWatermarkExtraction(request)
        guard let detail = response.envelope.jobs.first else {
            throw CIClientError(code: .invalidResponse, httpStatus: response.httpStatus, requestID: response.requestID, detail: "submit answer has no JobsDetail")
        }
        guard let store else {
            return Submission(jobID: detail.jobID, state: detail.state, requestID: response.requestID, stored: false)
        }
        let contentType = CallbackDecoder.detectFormat(response.body) == .json ? "application/json" : "application/xml"
        let received = ReceivedBody(bytes: response.body, contentType: contentType, remoteAddress: nil, source: .submit)
        let result = try await store.ingest(response.envelope, body: received)
        let state = result.jobs.first { $0.jobID == detail.jobID }?.currentState ?? detail.state
        return Submission(jobID: detail.jobID, state: state, requestID: response.requestID, stored: true)
    }
}
