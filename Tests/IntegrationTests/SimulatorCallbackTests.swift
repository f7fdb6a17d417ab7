import CIClient
import CIModel
import CISimulator
import Foundation
import Testing

private func submit(
    _ harness: CISimulatorTestHarness,
    object: String = "input/demo.mp4",
    to receiver: CISimulatorCallbackReceiver,
    format: CallbackFormat = .json
) async throws -> String {
    let response = try await harness.client().submitWatermarkExtraction(
        WatermarkExtractionRequest(object: object, userData: "cb-test", callbackURL: receiver.url, callbackFormat: format))
    return response.envelope.jobs[0].jobID
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

@Test func simulatorCallbacks_DeliverJSONAndXMLThatCallbackDecoderAccepts() async throws {
    try await CISimulatorCallbackReceiver.with { receiver in
        try await CISimulatorTestHarness.with { harness in
            let first = try await submit(harness, object: "input/one.mp4", to: receiver, format: .json)
            _ = try await receiver.waitForRequests(1)
            let second = try await submit(harness, object: "input/two.mp4", to: receiver, format: .json)
            _ = try await receiver.waitForRequests(2)
            let third = try await submit(harness, object: "input/missing.mp4", to: receiver, format: .xml)
            let received = try await receiver.waitForRequests(3)
            try #require(received.count == 3)

            let envelopes = try received.map { try CallbackDecoder.decode($0.body) }
            #expect(envelopes.map(\.format) == [.json, .json, .xml])
            #expect(envelopes.allSatisfy { $0.eventName == "TaskFinish" && $0.jobs.count == 1 })
            #expect(envelopes.map { $0.jobs[0].jobID } == [first, second, third])
            #expect(envelopes[0].jobs[0].state == .success && envelopes[0].jobs[0].watermark?.message == "wm-one.mp4")
            #expect(envelopes[1].jobs[0].watermark?.message == "wm-two.mp4")
            #expect(envelopes[1].jobs[0].userData == "cb-test")
            #expect(envelopes[2].jobs[0].state == .failed && envelopes[2].jobs[0].code == "ResourceNotFound")

            // CI's JSON has no Response wrapper, and JobsDetail is an object in some bodies, an array in others.
            let shapes = received.prefix(2).map { text($0.body) }
            #expect(shapes.allSatisfy { $0.hasPrefix("{\"EventName\":\"TaskFinish\",\"JobsDetail\":") })
            #expect(shapes.contains { $0.contains("\"JobsDetail\":{") } && shapes.contains { $0.contains("\"JobsDetail\":[{") })
            #expect(text(received[2].body).hasPrefix("<Response><EventName>TaskFinish</EventName><JobsDetail><Code>"), "alphabetical fields")
            #expect(received.map(\.contentType) == ["application/json", "application/json", "application/xml"])
            let statistics = try await harness.statistics { $0.delivered == 3 }
            #expect(statistics.delivered == 3)
        }
    }
}

@Test func simulatorCallbacks_DropProbabilityOneSendsNoFinalCallback() async throws {
    try await CISimulatorCallbackReceiver.with { receiver in
        // The late `Running` follows the final callback's turn in the job's one ordered delivery: once it
        // arrives, the final callback had its chance and was not sent (no sleep could prove that).
        try await CISimulatorTestHarness.with({
            $0.dropProbability = 1
            $0.outOfOrderProbability = 1
        }) { harness in
            let id = try await submit(harness, to: receiver)
            let received = try await receiver.waitForRequests(1)
            try #require(received.count == 1, "the late Running callback never came")
            let jobs = try received.map { try CallbackDecoder.decode($0.body).jobs[0] }
            #expect(jobs.map(\.jobID) == [id])
            #expect(jobs.map(\.state) == [.running], "only the late Running, never the final state")
            let statistics = try await harness.statistics { $0.delivered == 1 }
            #expect(statistics.dropped == 1 && statistics.outOfOrder == 1 && statistics.delivered == 1)
            // The job still finished: only reconciliation can learn it.
            let described = try await harness.client().describeJobs([id])
            #expect(described.envelope.jobs.first?.state == .success)
        }
    }
}

@Test func simulatorCallbacks_DuplicateProbabilityOneSendsSameBodyTwice() async throws {
    try await CISimulatorCallbackReceiver.with { receiver in
        // The late `Running` comes after the final body and its copies in the job's one ordered delivery:
        // when it arrives, every copy that was going to be sent has been.
        try await CISimulatorTestHarness.with({
            $0.duplicateProbability = 1
            $0.outOfOrderProbability = 1
        }) { harness in
            _ = try await submit(harness, to: receiver, format: .xml)
            let received = try await receiver.waitForRequests(3)
            try #require(received.count == 3)
            #expect(received[0].body == received[1].body)
            let states = try received.map { try CallbackDecoder.decode($0.body).jobs[0].state }
            #expect(states == [.success, .success, .running], "the final body exactly twice, then the late Running")
            let statistics = try await harness.statistics { $0.delivered == 3 }
            #expect(statistics.duplicates == 1 && statistics.delivered == 3)
        }
    }
}

@Test func simulatorCallbacks_OutOfOrderSendsRunningAfterSuccess() async throws {
    try await CISimulatorCallbackReceiver.with { receiver in
        try await CISimulatorTestHarness.with({ $0.outOfOrderProbability = 1 }) { harness in
            let id = try await submit(harness, to: receiver)
            let received = try await receiver.waitForRequests(2)
            try #require(received.count == 2)
            let states = try received.map { try CallbackDecoder.decode($0.body).jobs[0] }
            #expect(states.map(\.jobID) == [id, id])
            #expect(states.map(\.state) == [.success, .running])
            #expect(states[1].endTime == nil && states[1].watermark?.message == nil)
            #expect(harness.simulator.statistics.outOfOrder == 1)
        }
    }
}

@Test func simulatorCallbacks_ReceiverAnswering500TwiceGetsItOnTheThirdAttempt() async throws {
    try await CISimulatorCallbackReceiver.with(failFirst: 2) { receiver in
        try await CISimulatorTestHarness.with { harness in
            _ = try await submit(harness, to: receiver)
            // Counted once the receiver's 2xx came back: the delivery is over, nothing more will be sent.
            let statistics = try await harness.statistics { $0.delivered == 1 }
            #expect(statistics.retries == 2 && statistics.delivered == 1 && statistics.failures == 0)
            let received = receiver.received
            #expect(received.map(\.accepted) == [false, false, true])
            #expect(Set(received.map(\.body)).count == 1, "every attempt carries the same body")
        }
    }
}

@Test func simulatorCallbacks_GiveUpAfterMaxDeliveryAttempts() async throws {
    try await CISimulatorCallbackReceiver.with(failFirst: 100) { receiver in
        try await CISimulatorTestHarness.with({ $0.maxDeliveryAttempts = 2 }) { harness in
            _ = try await submit(harness, to: receiver)
            // Counted when the simulator gives up: the delivery is over, nothing more will be sent.
            let statistics = try await harness.statistics { $0.failures == 1 }
            #expect(statistics.failures == 1 && statistics.delivered == 0 && statistics.retries == 1)
            #expect(receiver.received.count == 2)
        }
    }
}

@Test func simulatorCallbacks_CallbackDelayPostponesDelivery() async throws {
    try await CISimulatorCallbackReceiver.with { receiver in
        try await CISimulatorTestHarness.with({ $0.callbackDelay = .milliseconds(300) }) { harness in
            let started = ContinuousClock.now
            _ = try await submit(harness, to: receiver)
            let received = try await receiver.waitForRequests(1)
            #expect(received.count == 1)
            #expect(ContinuousClock.now - started >= .milliseconds(370), "20 ms + 50 ms job, then 300 ms delay")
        }
    }
}
