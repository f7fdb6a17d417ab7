import ArgumentParser
import CallbackService
import Foundation

/// Outgoing webhooks, read from the environment (`WEBHOOK_*`, `MAX_SUBSCRIPTIONS`): set once per deployment.
struct WebhookSettings {
    /// `WEBHOOK_DELIVERY` (default true): run the delivery worker in this replica. The feed and the
    /// subscription API work either way; at least one replica must deliver.
    var deliver: Bool
    var delivery: WebhookDeliveryConfiguration
    var maxSubscriptions: Int

    static func resolve(_ resolver: SettingResolver) throws -> WebhookSettings {
        var delivery = WebhookDeliveryConfiguration()
        delivery.timeout = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_TIMEOUT", default: delivery.timeout, parse: SettingParsers.duration, expected: "a duration such as 15s")
        delivery.concurrency = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_CONCURRENCY", default: delivery.concurrency, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        delivery.subscriptionConcurrency = try resolver.value(
            flag: nil, flagName: "", env: "WEBHOOK_SUBSCRIPTION_CONCURRENCY", default: nil, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        if let share = delivery.subscriptionConcurrency, share > delivery.concurrency {
            throw ValidationError("WEBHOOK_SUBSCRIPTION_CONCURRENCY (\(share)) must be at most WEBHOOK_CONCURRENCY (\(delivery.concurrency))")
        }
        delivery.retrySchedule = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_RETRY_SCHEDULE", default: delivery.retrySchedule,
            parse: { text in
                let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                let pauses = parts.compactMap(SettingParsers.duration)
                return pauses.count == parts.count && !pauses.isEmpty ? pauses : nil
            },
            expected: "comma-separated pauses between attempts such as 5s,5m,30m")
        delivery.leaseMargin = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_LEASE_MARGIN", default: delivery.leaseMargin, parse: SettingParsers.duration,
            expected: "a duration such as 15s")
        delivery.walkSpacing = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_WALK_SPACING", default: delivery.walkSpacing, parse: SettingParsers.durationOrZero,
            expected: "a duration such as 10ms, or 0 to walk at every wake-up")
        delivery.maxResponseBytes = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_MAX_RESPONSE_BYTES", default: delivery.maxResponseBytes, parse: SettingParsers.byteSize,
            expected: "a size such as 64k")
        delivery.failingThreshold = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_FAILING_AFTER", default: delivery.failingThreshold, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        delivery.breakerThreshold = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_BREAKER_AFTER", default: delivery.breakerThreshold, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        delivery.breakerCoolDown = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_BREAKER_COOL_DOWN", default: delivery.breakerCoolDown, parse: SettingParsers.duration,
            expected: "a duration such as 1s")
        delivery.breakerMaxCoolDown = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_BREAKER_MAX_COOL_DOWN", default: delivery.breakerMaxCoolDown, parse: SettingParsers.duration,
            expected: "a duration such as 60s")
        guard delivery.breakerCoolDown > .zero, delivery.breakerMaxCoolDown >= delivery.breakerCoolDown else {
            throw ValidationError(
                "WEBHOOK_BREAKER_COOL_DOWN must be above zero and at most WEBHOOK_BREAKER_MAX_COOL_DOWN "
                    + "(\(SettingFormat.duration(delivery.breakerCoolDown)), \(SettingFormat.duration(delivery.breakerMaxCoolDown)))")
        }
        delivery.allowedDestinations = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_ALLOW_CIDRS", default: delivery.allowedDestinations,
            parse: { try? IPAddressRange.parseList($0).get() }, expected: "comma-separated CIDR blocks such as 10.0.0.0/8,2001:db8::/32")
        let deliver = try resolver.required(
            flag: nil, flagName: "", env: "WEBHOOK_DELIVERY", default: true, parse: SettingParsers.bool, expected: "true or false")
        let maxSubscriptions = try resolver.required(
            flag: nil, flagName: "", env: "MAX_SUBSCRIPTIONS", default: ServeDefaults.application.maxSubscriptions, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        return WebhookSettings(deliver: deliver, delivery: delivery, maxSubscriptions: maxSubscriptions)
    }

    /// For `serve --help`.
    static let help = """
          WEBHOOK_DELIVERY        Send webhook deliveries from this replica: true or false (default: true).
          WEBHOOK_TIMEOUT         Time for one delivery attempt (default: \(SettingFormat.duration(ServeDefaults.webhooks.timeout))).
          WEBHOOK_CONCURRENCY     Webhook POSTs in flight per replica (default: \(ServeDefaults.webhooks.concurrency)).
          WEBHOOK_SUBSCRIPTION_CONCURRENCY
                                  Most of them one subscription's: what a consumer that never answers holds (default: half of WEBHOOK_CONCURRENCY).
          WEBHOOK_RETRY_SCHEDULE  Pauses before the 2nd, 3rd, … attempt (default: \(ServeDefaults.webhooks.retrySchedule.map(SettingFormat.duration).joined(separator: ","))).
          WEBHOOK_LEASE_MARGIN    Extra lease beyond WEBHOOK_TIMEOUT before another replica resends (default: \(SettingFormat.duration(ServeDefaults.webhooks.leaseMargin))).
          WEBHOOK_WALK_SPACING    Least time between walks of the subscriptions' cursors: under load one walk sends more (default: \(SettingFormat.duration(ServeDefaults.webhooks.walkSpacing))).
          WEBHOOK_MAX_RESPONSE_BYTES
                                  Response body bytes read from a consumer (default: \(SettingFormat.byteSize(ServeDefaults.webhooks.maxResponseBytes))).
          WEBHOOK_FAILING_AFTER   Consecutive failed attempts that flag a subscription failing (default: \(ServeDefaults.webhooks.failingThreshold)).
          WEBHOOK_BREAKER_AFTER   Consecutive failed attempts (no answer, 5xx, 429) that open a subscription's circuit breaker (default: \(ServeDefaults.webhooks.breakerThreshold)).
          WEBHOOK_BREAKER_COOL_DOWN
                                  Wait before the first probe of an open breaker, doubled per failed probe (default: \(SettingFormat.duration(ServeDefaults.webhooks.breakerCoolDown))).
          WEBHOOK_BREAKER_MAX_COOL_DOWN
                                  Longest wait between probes (default: \(SettingFormat.duration(ServeDefaults.webhooks.breakerMaxCoolDown))).
          WEBHOOK_ALLOW_CIDRS     Only destinations in these CIDR blocks (default: anywhere but 169.254.0.0/16 and fe80::/10).
          MAX_SUBSCRIPTIONS       Most webhook subscriptions (default: \(ServeDefaults.application.maxSubscriptions)).
        """
}
