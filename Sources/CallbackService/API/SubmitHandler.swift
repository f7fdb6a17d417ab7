import CIClient
import CIModel
import Foundation
import HTTPWire
import JobStore
import Logging

extension CallbackApplication {
    /// `POST /v1/watermark-extractions` with `{"Object":…,"UserData":…,"JobLevel":…,"CallBackFormat":…}`:
    /// submits an ExtractDigitalWatermark job to CI, stores CI's answer as the job's first state, and
    /// answers 201 with where to look the job up.
    ///
    /// Every input check happens before CI is called; a 400 names the offending field.
    func submitWatermarkExtraction(_ request: HTTPRequest, logger: Logger) async throws -> HTTPResponse {
        let body = try Self.submissionBody(request.body)
        let ciRequest =
            submitter?.request(object: body.object, userData: body.userData, jobLevel: body.jobLevel, callbackFormat: body.callbackFormat)
            ?? WatermarkExtractionRequest(object: body.object, userData: body.userData, jobLevel: body.jobLevel, callbackFormat: body.callbackFormat)
        // Checked before the configuration, so a bad request is a 400 whatever the deployment.
        do {
            try ciRequest.validate()
        } catch {
            throw APIError.invalidParameter(error.field, error.reason)
        }
        guard let submitter else {
            throw APIError(
                status: .serviceUnavailable, code: "CINotConfigured",
                message: "this service has no CI credentials (set CI_SECRET_ID, CI_SECRET_KEY, CI_BUCKET and CI_REGION) and cannot submit jobs")
        }
        let submission: WatermarkSubmitter.Submission
        do {
            submission = try await submitter.submit(ciRequest, store: store)
        } catch let error as CIClientError {
            logger.warning("watermark submission failed", metadata: ["ci.error": "\(error)"])
            throw Self.apiError(for: error)
        } catch let error as WatermarkRequestError {
            throw APIError.invalidParameter(error.field, error.reason)
        }
        metrics.recordSubmission()
        logger.info(
            "watermark extraction submitted",
            metadata: ["job.id": "\(submission.jobID)", "ci.request_id": "\(submission.requestID ?? "-")"])
        let escaped = Self.percentEncodedSegment(submission.jobID)
        var response = HTTPResponse.json(status: .created) { json in
            json.member("JobId", submission.jobID)
            json.member("State", submission.state.rawValue)
            json.member("LookupUrl", "/v1/jobs/\(escaped)")
            json.member("WatermarkUrl", "/v1/jobs/\(escaped)/watermark")
        }
        response.headers.replaceOrAdd(name: "Location", value: "/v1/jobs/\(escaped)")
        return response
    }

    /// The request body's fields, or a 400 naming what is wrong.
    struct SubmissionBody: Sendable {
        var object: String
        var userData: String?
        var jobLevel: Int?
        var callbackFormat: CallbackFormat
    }

    /// The body as sent. A member may be absent, but not `null`: a client that sends `null` meant
    /// something, and silently dropping it would submit a different job than asked for.
    private struct SubmissionJSON: Decodable {
        var object: String?
        var userData: String?
        var jobLevel: Int?
        var callbackFormat: String?

        private enum CodingKeys: String, CodingKey {
            case object = "Object", userData = "UserData", jobLevel = "JobLevel", callbackFormat = "CallBackFormat"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            func member<T: Decodable>(_ key: CodingKeys, _ type: T.Type) throws -> T? {
                guard container.contains(key) else { return nil }
                if try container.decodeNil(forKey: key) { throw APIError.invalidParameter(key.rawValue, "must not be null") }
                return try container.decode(type, forKey: key)
            }
            object = try member(.object, String.self)
            userData = try member(.userData, String.self)
            // Read as a number first: Foundation reports 1.5 or 1e30 read as Int as a corrupt document,
            // which would hide the field's name.
            if let level = try member(.jobLevel, Double.self) {
                guard level.rounded() == level, abs(level) < 1e9 else { throw APIError.invalidParameter("JobLevel", "must be 0, 1 or 2") }
                jobLevel = Int(level)
            }
            callbackFormat = try member(.callbackFormat, String.self)
        }
    }

    static func submissionBody(_ bytes: [UInt8]) throws -> SubmissionBody {
        let decoded: SubmissionJSON
        do {
            decoded = try JSONDecoder().decode(SubmissionJSON.self, from: Data(bytes))
        } catch let error as APIError {
            throw error
        } catch let DecodingError.typeMismatch(_, context) where !context.codingPath.isEmpty {
            throw APIError.invalidParameter(context.codingPath[0].stringValue, "has the wrong type")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            throw APIError.invalidParameter(context.codingPath[0].stringValue, "has the wrong type or is out of range")
        } catch {
            throw APIError(
                status: .badRequest, code: "InvalidRequestBody",
                message: #"the body must be a JSON object such as {"Object":"input/demo.mp4","UserData":"…","JobLevel":0}"#)
        }
        guard let object = decoded.object else {
            throw APIError.invalidParameter("Object", "is required")
        }
        var format = CallbackFormat.json
        if let text = decoded.callbackFormat {
            guard let parsed = CallbackFormat(rawValue: text) else {
                throw APIError.invalidParameter("CallBackFormat", "must be JSON or XML")
            }
            format = parsed
        }
        return SubmissionBody(object: object, userData: decoded.userData, jobLevel: decoded.jobLevel, callbackFormat: format)
    }

    /// CI's refusal or absence, as the caller should see it: 502 with CI's Code, Message and RequestId
    /// when CI answered, 504 when it did not answer in time, 502 when it could not be reached.
    static func apiError(for error: CIClientError) -> APIError {
        switch error.code {
        case .ciError:
            var parts: [String] = ["CI refused the job"]
            if let status = error.httpStatus { parts.append("HTTP \(status)") }
            if let code = error.ciCode { parts.append("Code \(code)") }
            if let message = error.ciMessage { parts.append("Message \"\(message.prefix(200))\"") }
            if let requestID = error.requestID { parts.append("RequestId \(requestID)") }
            return APIError(status: .badGateway, code: "CIError", message: parts.joined(separator: ": "))
        case .timeout:
            return APIError(
                status: HTTPStatus(code: 504, reasonPhrase: "Gateway Timeout"), code: "CITimeout",
                message: "CI did not answer in time; the job may exist at CI, and the reconciler will record it if so")
        case .invalidResponse:
            return APIError(status: .badGateway, code: "CIError", message: "CI's answer could not be read (request id \(error.requestID ?? "-"))")
        case .invalidConfiguration:
            return APIError(status: .serviceUnavailable, code: "CINotConfigured", message: "the CI configuration is invalid: \(error.detail)")
        default:
            return APIError(status: .badGateway, code: "CIUnreachable", message: "CI could not be reached; nothing was submitted, retry later")
        }
    }
}
