import CIModel
import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// A statement is prepared once per connection, keyed by its text: the lean walk record must carry a walk's
/// values in its parameters only, or every walk prepares (parses and plans) it again.
@Suite("Walk recording text")
struct WalkRecordingTextTests {
    private static func succeeded(subscription: String, deliveryID: Int64, eventID: Int64, jobID: String, at time: Date) -> FinishedAttempt {
        let job = StoredJob(
            jobID: jobID, state: .success, tag: "ExtractDigitalWatermark", detailJSON: "{}", hasWatermark: false, watermarkType: nil,
            watermarkVersion: nil, watermarkMessage: nil, firstReceivedAt: "2026-12-06T00:00:00.000000Z",
            lastReceivedAt: "2026-12-06T00:00:00.000000Z", stateChangedAt: "2026-12-06T00:00:00.000000Z", callbackCount: 1,
            stateSource: .callback)
        let delivery = LeasedDelivery(
            deliveryID: deliveryID, attempt: 1, scheduleAttempt: 1, subscriptionID: subscription, url: "http://127.0.0.1:9/hook",
            secret: "whsec_c2VjcmV0", event: JobStateEvent(eventID: eventID, feedPosition: eventID, job: job), walked: true)
        return FinishedAttempt(delivery: delivery, completion: .succeeded, statusCode: 200, error: nil, startedAt: time, finishedAt: time)
    }

    @Test func recording_TwoDifferentWalks_SameTextDifferentParameters() throws {
        let first = try #require(
            WebhookWalkSuccessSQL.recording(
                [Self.succeeded(subscription: "sub_a", deliveryID: 10, eventID: 100, jobID: "j1", at: Date(timeIntervalSince1970: 1))],
                advancing: [CursorAdvance(subscriptionID: "sub_a", token: 7, walkedThrough: 100)]))
        let second = try #require(
            WebhookWalkSuccessSQL.recording(
                (0..<3).map {
                    Self.succeeded(subscription: "sub_b", deliveryID: 500 + $0, eventID: 9000 + $0, jobID: "j\($0)", at: Date(timeIntervalSince1970: 2))
                },
                advancing: [CursorAdvance(subscriptionID: "sub_b", token: 123_456_789, walkedThrough: 9_999)]))
        #expect(first.sql == second.sql)
        #expect(first.binds != second.binds)
        #expect(!first.sql.contains("100") && !second.sql.contains("9999"))
    }
}
