import CallbackService
import Foundation
import Testing

/// Failed console logins are limited per client address.
@Suite("Console login limit")
struct ConsoleLoginLimitTests {
    @Test func consoleLogin_pastTheFailedAttemptsOfAMinute_answers429WithRetryAfter_forThatAddressOnly() async throws {
        let policy = AccessPolicy(apiTokens: ["reader-1"], trustedProxies: [IPAddressRange("127.0.0.1/32")!])
        try await ServiceHarness.with(accessPolicy: policy) { service in
            let client = ConsoleClient(service)
            _ = try await client.send("GET", "/console/login")
            let csrf = try #require(client.cookies["ci_console_csrf"])
            let guesser = ["X-Forwarded-For": "198.51.100.7"]
            // The default: 10 a minute.
            for attempt in 1...10 {
                let wrong = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "guess-\(attempt)"], headers: guesser)
                #expect(wrong.status == 401, "attempt \(attempt)")
            }
            let limited = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "guess-11"], headers: guesser)
            #expect(limited.status == 429)
            let retryAfter = try #require(limited.header("Retry-After").flatMap { Int($0) })
            #expect((1...60).contains(retryAfter))
            #expect(limited.text.contains("Too many wrong tokens"))
            let rightButLimited = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-1"], headers: guesser)
            #expect(rightButLimited.status == 429 && client.cookies["ci_console_session"] == nil, "a limited address cannot go on guessing")

            let other = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-1"], headers: ["X-Forwarded-For": "198.51.100.8"])
            #expect(other.status == 303, "another address is not held up")
        }
    }
}
