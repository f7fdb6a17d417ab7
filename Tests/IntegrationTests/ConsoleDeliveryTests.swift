import Foundation
import PostgresLibPQ
import Testing

/// A job's webhook deliveries on its console page, and the redeliver action.
@Suite("Console deliveries")
struct ConsoleDeliveryTests {
    @Test func jobPage_withSubscriptions_listsDeliveriesEscaped_andRedeliverQueuesTheDeliveryAgain() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", ConsoleTests.watermarkCallback(jobID)).status == 200)
            let client = ConsoleClient(service)
            let before = try await client.send("GET", "/console/jobs/\(jobID)")
            #expect(before.status == 200 && !before.text.contains("Webhook deliveries"), "no subscriptions, no section")

            let hostile = ConsoleTests.hostile
            _ = try await service.query(
                """
                INSERT INTO webhook_subscriptions (subscription_id, url, secret, created_at)
                VALUES ('sub_console', \("https://hooks.example/" + hostile), 'whsec_test', now())
                """)
            let delivery = try #require(
                try await service.query(
                    """
                    INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, status, attempt_count, next_attempt_at, created_at,
                                                    completed_at, last_status_code, last_error)
                    SELECT 'sub_console', event_id, job_id, 'failed', 3, now(), now(), now(), 500, \(hostile)
                    FROM ci_job_state_events WHERE job_id = \(jobID)
                    RETURNING delivery_id::text
                    """
                ).first?[0].string)

            let page = try await client.send("GET", "/console/jobs/\(jobID)")
            #expect(page.status == 200)
            #expect(page.text.contains("<h2>Webhook deliveries</h2>") && page.text.contains("<code>sub_console</code>"))
            #expect(page.text.contains("HTTP 500: &lt;img src=x onerror=alert(1)&gt;"), "the last error, escaped")
            #expect(page.text.contains("https://hooks.example/&lt;img src=x onerror=alert(1)&gt;"), "the endpoint, escaped")
            #expect(!page.text.contains("<img"))
            #expect(page.text.contains(#"class="delivery-failed">failed</td><td data-label="Attempts">3</td>"#))
            let csrf = try #require(client.cookies["ci_console_csrf"])
            #expect(page.text.contains(#"<input type="hidden" name="delivery" value="\#(delivery)">"#))
            #expect(page.text.contains(#"action="/console/jobs/\#(jobID)/redeliver"><input type="hidden" name="csrf" value="\#(csrf)">"#))

            let forged = try await client.send("POST", "/console/jobs/\(jobID)/redeliver", form: ["subscription": "sub_console", "delivery": delivery])
            #expect(forged.status == 403, "no CSRF token, no redelivery")
            let malformed = try await client.send("POST", "/console/jobs/\(jobID)/redeliver", form: ["csrf": csrf, "subscription": "sub_console", "delivery": "x"])
            #expect(malformed.status == 400)
            let redelivered = try await client.send(
                "POST", "/console/jobs/\(jobID)/redeliver", form: ["csrf": csrf, "subscription": "sub_console", "delivery": delivery])
            #expect(redelivered.status == 303 && redelivered.header("Location") == "/console/jobs/\(jobID)?redelivered=queued")
            let stored = try await service.query(
                "SELECT status, schedule_start::text, (next_attempt_at <= now())::text FROM webhook_deliveries WHERE delivery_id = \(Int64(delivery)!)")
            #expect(stored.first?[0].string == "pending" && stored.first?[1].string == "3" && stored.first?[2].string == "true")
            let api = try await service.get("/v1/subscriptions/sub_console/deliveries")
            #expect(api.status == 200 && api.text.contains(#""pending""#), "the API sees what the console did: \(api.text)")

            let after = try await client.send("GET", "/console/jobs/\(jobID)?redelivered=queued")
            #expect(after.text.contains("The delivery is due again now") && after.text.contains(#"class="delivery-pending">pending"#))
            let missing = try await client.send("POST", "/console/jobs/\(jobID)/redeliver", form: ["csrf": csrf, "subscription": "sub_other", "delivery": delivery])
            #expect(missing.header("Location") == "/console/jobs/\(jobID)?redelivered=missing")
            let superseded = try await client.send("GET", "/console/jobs/\(jobID)?redelivered=superseded")
            #expect(superseded.text.contains("queued again since, as another delivery (a replay): redeliver that one"))
        }
    }
}
