import Foundation
import Testing

@testable import CallbackService

/// The delivery state machine and the Standard Webhooks signature, without sockets or a database.
@Suite("Webhook delivery policy")
struct WebhookDeliveryPolicyTests {
    let configuration = WebhookDeliveryConfiguration()

    @Test func decide_2xx_Succeeds_410_IsGone_OnAnyAttempt() {
        for status in [200, 201, 204, 299] {
            #expect(WebhookAttemptDecision.decide(.init(status: status), attempt: 10, configuration: configuration, random: 0.5) == .succeeded)
        }
        #expect(WebhookAttemptDecision.decide(.init(status: 410), attempt: 1, configuration: configuration, random: 0.5) == .gone)
    }

    @Test func decide_Failures_FollowTheScheduleWithJitter_ThenFail() {
        // random 0.5 is no jitter; 0 and 1 are the ends of ±20%.
        #expect(WebhookAttemptDecision.decide(.init(status: 500), attempt: 1, configuration: configuration, random: 0.5) == .retry(after: .seconds(5)))
        #expect(WebhookAttemptDecision.decide(.init(status: nil), attempt: 2, configuration: configuration, random: 0.5) == .retry(after: .seconds(300)))
        #expect(WebhookAttemptDecision.decide(.init(status: 302), attempt: 2, configuration: configuration, random: 0) == .retry(after: .seconds(240)))
        #expect(WebhookAttemptDecision.decide(.init(status: 400), attempt: 2, configuration: configuration, random: 1) == .retry(after: .seconds(360)))
        #expect(WebhookAttemptDecision.decide(.init(status: 500), attempt: 9, configuration: configuration, random: 0.5) == .retry(after: .seconds(86_400)))
        #expect(WebhookAttemptDecision.decide(.init(status: 500), attempt: 10, configuration: configuration, random: 0.5) == .failed)
        // The default schedule spans about three days.
        let total = configuration.retrySchedule.reduce(Duration.zero, +)
        #expect(total > .seconds(2.5 * 86_400) && total < .seconds(3.5 * 86_400))
        #expect(configuration.maxAttempts == 10)
    }

    @Test func decide_DrawsTheJitterOnlyForARetry() {
        // The worker passes `Double.random(in:)`, a getrandom(2) call: a success, the common case, must not pay it.
        var draws = 0
        func draw() -> Double {
            draws += 1
            return 0.5
        }
        #expect(WebhookAttemptDecision.decide(.init(status: 200), attempt: 1, configuration: configuration, random: draw()) == .succeeded)
        #expect(WebhookAttemptDecision.decide(.init(status: 410), attempt: 1, configuration: configuration, random: draw()) == .gone)
        #expect(WebhookAttemptDecision.decide(.init(status: 500), attempt: 10, configuration: configuration, random: draw()) == .failed)
        #expect(draws == 0)
        #expect(WebhookAttemptDecision.decide(.init(status: 500), attempt: 1, configuration: configuration, random: draw()) == .retry(after: .seconds(5)))
        #expect(draws == 1)
    }

    @Test func decide_RetryAfter_IsHonouredOn429And503Only_AndCapped() {
        #expect(
            WebhookAttemptDecision.decide(.init(status: 429, retryAfterSeconds: 42), attempt: 1, configuration: configuration, random: 0.9)
                == .retry(after: .seconds(42)))
        #expect(
            WebhookAttemptDecision.decide(.init(status: 503, retryAfterSeconds: 999_999), attempt: 1, configuration: configuration, random: 0.9)
                == .retry(after: .seconds(86_400)))
        #expect(
            WebhookAttemptDecision.decide(.init(status: 500, retryAfterSeconds: 42), attempt: 1, configuration: configuration, random: 0.5)
                == .retry(after: .seconds(5)))
        // The last attempt stays the last, whatever Retry-After says.
        #expect(WebhookAttemptDecision.decide(.init(status: 429, retryAfterSeconds: 1), attempt: 10, configuration: configuration, random: 0.5) == .failed)
    }

    @Test func destinations_LinkLocalAndMetadataRefused_AllowListWins() throws {
        let address = { (text: String) in try #require(IPAddress(text)) }
        #expect(!configuration.allowsDestination(try address("169.254.169.254")))
        #expect(!configuration.allowsDestination(try address("fe80::1")))
        #expect(configuration.allowsDestination(try address("10.1.2.3")))
        #expect(configuration.allowsDestination(try address("2001:db8::1")))
        var limited = configuration
        limited.allowedDestinations = try #require(try? IPAddressRange.parseList("10.0.0.0/8,169.254.10.0/24").get())
        #expect(limited.allowsDestination(try address("10.1.2.3")))
        #expect(!limited.allowsDestination(try address("192.168.1.1")))
        #expect(limited.allowsDestination(try address("169.254.10.1")))
        #expect(!limited.allowsDestination(try address("169.254.169.254")))
    }

    /// The example of the standardwebhooks libraries' own tests.
    @Test func signature_MatchesTheStandardWebhooksReferenceVector() {
        let signature = WebhookSigning.signature(
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330,
            body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(WebhookSigning.signature(secret: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id: "x", timestamp: 1, body: []) == nil)
    }

    @Test func newSecret_IsWhsecAnd32RandomBytes() throws {
        let secret = WebhookSigning.newSecret()
        #expect(secret.hasPrefix("whsec_"))
        #expect(try #require(WebhookSigning.key(of: secret)).count == 32)
        #expect(WebhookSigning.newSecret() != secret)
    }

    @Test func subscriptionBody_ChecksEachField() throws {
        let body = try CallbackApplication.subscriptionBody(
            Array(#"{"Url":"https://h.example/x","Tags":["B","A","A"],"States":["Success"],"Description":"d"}"#.utf8))
        #expect(body == .init(url: "https://h.example/x", tags: ["A", "B"], states: ["Success"], description: "d"))
        let refused = [
            #"{"Tags":["A"]}"#, #"{"Url":"ftp://h/x"}"#, #"{"Url":"https://h/x","States":["Done"]}"#, #"{"Url":"https://h/x","Tags":[]}"#,
            #"{"Url":"https://h/x","Colour":"red"}"#, #"[]"#, #"{"Url":"https://h/x#frag"}"#,
        ]
        for text in refused {
            #expect(throws: APIError.self, "\(text)") { try CallbackApplication.subscriptionBody(Array(text.utf8)) }
        }
    }

    /// A walk's deliveries go out in waves: each job's first event in the first, its second in the next,
    /// so a job's events leave one after another while different jobs' leave together.
    @Test func walkWaves_AJobsEventsOneAfterAnother_DifferentJobsTogether() {
        var waves = WebhookDeliveryWorker.WalkWaves(jobs: ["a", "b", "a", "c", "a", "b"])
        #expect(waves.waves == [[0, 1, 3], [2, 5], [4]])
        var sent: [[Int]] = []
        while let wave = waves.next() {
            sent.append(wave.sent)
            #expect(wave.held.isEmpty)
            for index in wave.sent { waves.record(index, succeeded: true, gone: false) }
        }
        #expect(sent == [[0, 1, 3], [2, 5], [4]])
        var none = WebhookDeliveryWorker.WalkWaves(jobs: [])
        #expect(none.next() == nil)
    }

    /// A job whose delivery did not succeed has its later ones in the walk held back (they wait behind
    /// it); other jobs go on. After a 410 nothing more of the walk is sent.
    @Test func walkWaves_FailureHoldsBackThatJobsLaterEvents_GoneHoldsBackEverything() {
        var waves = WebhookDeliveryWorker.WalkWaves(jobs: ["a", "b", "a", "b", "a"])
        #expect(waves.next() == .init(sent: [0, 1], held: []))
        waves.record(0, succeeded: false, gone: false)
        waves.record(1, succeeded: true, gone: false)
        #expect(waves.next() == .init(sent: [3], held: [2]))
        waves.record(3, succeeded: true, gone: false)
        #expect(waves.next() == .init(sent: [], held: [4]))
        #expect(waves.next() == nil)

        var gone = WebhookDeliveryWorker.WalkWaves(jobs: ["a", "b", "a", "b"])
        #expect(gone.next() == .init(sent: [0, 1], held: []))
        gone.record(0, succeeded: true, gone: false)
        gone.record(1, succeeded: false, gone: true)
        #expect(gone.next() == .init(sent: [], held: [2, 3]))
    }
}
