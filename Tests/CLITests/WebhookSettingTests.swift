import CallbackService
import Testing

@testable import ci_callbackd

/// `WEBHOOK_WALK_SPACING` as an operator sets it: pure, no database.
@Suite("Webhook settings")
struct WebhookSettingTests {
    @Test func walkSpacing_defaultsToTenMilliseconds_readsTheEnvironment_zeroTurnsItOff_garbageIsRefused() throws {
        #expect(try WebhookSettings.resolve(SettingResolver(environment: [:])).delivery.walkSpacing == .milliseconds(10))
        #expect(try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "25ms"])).delivery.walkSpacing == .milliseconds(25))
        #expect(try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "0"])).delivery.walkSpacing == .zero)
        #expect(throws: (any Error).self) { try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "soon"])) }
        #expect(throws: (any Error).self) { try WebhookSettings.resolve(SettingResolver(environment: ["WEBHOOK_WALK_SPACING": "-5ms"])) }
    }
}
