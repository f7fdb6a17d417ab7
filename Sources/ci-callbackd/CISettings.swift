import ArgumentParser
import CIClient
import CallbackService
import Foundation
import JobStore
import Logging

/// The CI side of the service, read from the environment: credentials and endpoint
/// (`CI_*`, see ``CIClient/CIConfiguration/fromEnvironment(_:)``), the callback URL CI is given, and
/// the reconciler's schedule.
struct CISettings {
    /// `nil` when `CI_SECRET_ID` is unset: the service then neither submits nor reconciles.
    var configuration: CIConfiguration?
    /// `PUBLIC_CALLBACK_URL`: this service's callback URL as CI reaches it, token included.
    var publicCallbackURL: String?
    /// `RECONCILE` (default true when credentials are set).
    var reconcile: Bool
    var reconciler: ReconcilerConfiguration

    static func resolve(_ resolver: SettingResolver) throws -> CISettings {
        let configuration: CIConfiguration?
        do {
            configuration = try CIConfiguration.fromEnvironment(resolver.environment)
        } catch {
            throw ValidationError("\(error.variable) \(error.reason)")
        }
        let callbackURL = try resolver.value(
            flag: nil, flagName: "", env: "PUBLIC_CALLBACK_URL", default: nil,
            parse: { text in
                // The same rule CI's CallBack element follows; checked here so a typo fails at start.
                WatermarkExtractionRequest(object: "x", callbackURL: text).validateCallback() ? text : nil
            },
            expected: "an http or https URL such as https://callbacks.example.com/v1/callbacks/<token>")
        var reconciler = ReconcilerConfiguration()
        reconciler.interval = try resolver.required(
            flag: nil, flagName: "", env: "RECONCILE_INTERVAL", default: reconciler.interval, parse: SettingParsers.duration,
            expected: "a duration such as 60s")
        reconciler.age = try resolver.required(
            flag: nil, flagName: "", env: "RECONCILE_AFTER", default: reconciler.age, parse: SettingParsers.durationOrZero,
            expected: "a duration such as 5m, or 0")
        reconciler.window = try resolver.required(
            flag: nil, flagName: "", env: "RECONCILE_WINDOW", default: reconciler.window, parse: SettingParsers.duration,
            expected: "a duration such as 24h")
        reconciler.discoveryInterval = try resolver.required(
            flag: nil, flagName: "", env: "RECONCILE_DISCOVERY_INTERVAL", default: reconciler.discoveryInterval,
            parse: SettingParsers.durationOrZero, expected: "a duration such as 10m, or 0")
        let reconcile = try resolver.required(
            flag: nil, flagName: "", env: "RECONCILE", default: configuration != nil, parse: SettingParsers.bool, expected: "true or false")
        if reconcile && configuration == nil {
            throw ValidationError("RECONCILE=true needs CI credentials: set CI_SECRET_ID, CI_SECRET_KEY, CI_BUCKET and CI_REGION")
        }
        return CISettings(configuration: configuration, publicCallbackURL: callbackURL, reconcile: reconcile, reconciler: reconciler)
    }

    func submitter(logger: Logger) -> WatermarkSubmitter? {
        configuration.map { WatermarkSubmitter(client: CIClient(configuration: $0, logger: logger), callbackURL: publicCallbackURL) }
    }
}

extension WatermarkExtractionRequest {
    /// Whether ``callbackURL`` passes ``validate()``'s `CallBack` rule.
    fileprivate func validateCallback() -> Bool {
        do {
            try validate()
            return true
        } catch {
            return error.field != "CallBack"
        }
    }
}
