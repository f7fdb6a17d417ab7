import CallbackService
import Testing

@testable import ci_callbackd

/// Webhook settings as an operator sets them: pure, no database.
@Suite("Webhook settings")
struct WebhookSettingTests {
    @Test func walkSpacing_defaultsToTenMilliseconds_readsTheEnvironment_zeroTurnsItOff_garbageIsRefused() throws {
        #expect(try WebhookSettings.resolve(SettingResolver(environment: [:])).delivery.walkSpacing == .milliseconds(10))
        #expect(try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "25ms"])).delivery.walkSpacing == .milliseconds(25))
        #expect(try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "0"])).delivery.walkSpacing == .zero)
        #expect(throws: (any Error).self) { try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "soon"])) }
        #expect(throws: (any Error).self) { try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "-5ms"])) }
    }

    @Test func subscriptionShare_defaultsToHalfTheConcurrency_readsTheEnvironment_moreThanTheConcurrencyIsRefused() throws {
        func share(_ environment: [String: String]) throws -> Int {
            try WebhookSettings.resolve(SettingResolver(environment: environment)).delivery.subscriptionShare
        }
        #expect(try share([:]) == 32)
        #expect(try share(["WEBHOOK_CONCURRENCY": "10"]) == 5)
        #expect(try share(["WEBHOOK_CONCURRENCY": "1"]) == 1)
        #expect(try share(["WEBHOOK_SUBSCRIPTION_CONCURRENCY": "8"]) == 8)
        #expect(try share(["WEBHOOK_CONCURRENCY": "16", "WEBHOOK_SUBSCRIPTION_CONCURRENCY": "16"]) == 16)
        #expect(throws: (any Error).self) { try share(["WEBHOOK_CONCURRENCY": "16", "WEBHOOK_SUBSCRIPTION_CONCURRENCY": "17"]) }
        #expect(throws: (any Error).self) { try share(["WEBHOOK_SUBSCRIPTION_CONCURRENCY": "0"]) }
    }
}
