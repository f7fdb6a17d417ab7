import Foundation
import PostgresLibPQ
import Testing

/// A job whose callback body retention pruned: its page says so and links nowhere broken, and the
/// callback's own page says pruned rather than "no such callback".
@Suite("Console pruned bodies")
struct ConsolePrunedTests {
    @Test func jobAndCallbackPages_afterRetentionPrunedTheBody_sayPruned_withoutBrokenLinks() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let stored = try await service.post("/v1/callbacks", ConsoleTests.watermarkCallback(jobID))
            let callbackID = try #require(try stored.json()["CallbackId"] as? Int)
            // What dropping the day's partition does: the body and its digest go, the history stays.
            _ = try await service.query("DELETE FROM ci_callbacks WHERE callback_id = \(Int64(callbackID))")
            _ = try await service.query("DELETE FROM ci_callback_digests WHERE callback_id = \(Int64(callbackID))")
            let client = ConsoleClient(service)

            let job = try await client.send("GET", "/console/jobs/\(jobID)")
            #expect(job.status == 200)
            #expect(job.text.contains("pruned by retention"))
            #expect(!job.text.contains("/console/callbacks/\(callbackID)"), "no link to a body that is gone")
            for link in Self.links(in: job.text) where link.hasPrefix("/console/") && !link.contains("?") {
                let target = try await client.send("GET", link)
                #expect([200, 303].contains(target.status), "\(link) answers \(target.status)")
            }

            let callback = try await client.send("GET", "/console/callbacks/\(callbackID)")
            #expect(callback.status == 410)
            #expect(callback.text.contains("pruned") && !callback.text.contains("There is no callback"))
            #expect(callback.text.contains(#"href="/console/jobs/\#(jobID)""#), "links the jobs it mentioned")
            let raw = try await client.send("GET", "/console/callbacks/\(callbackID)/raw")
            #expect(raw.status == 410 && raw.text.contains("pruned"))

            let never = try await client.send("GET", "/console/callbacks/987654321")
            #expect(never.status == 404 && never.text.contains("There is no callback"))
        }
    }

    /// A rejected callback names no job, so once retention drops its body (and its digest) nothing says it
    /// existed: its page must not claim it never did, only a callback id never handed out is "no callback".
    @Test func callbackPage_rejectedCallbackPrunedByRetention_saysNotFoundOrPruned_notThatItNeverExisted() async throws {
        try await ServiceHarness.with { service in
            let rejected = try await service.post("/v1/callbacks", Array(#"{"JobsDetail":{"State":"Success"}}"#.utf8))
            #expect(rejected.status == 400)
            let rows = try await service.query("SELECT max(callback_id)::text AS id FROM ci_callbacks WHERE outcome = 'rejected'")
            let callbackID = try #require(rows.first?[0].string.flatMap { Int64($0) })
            _ = try await service.query("DELETE FROM ci_callbacks WHERE callback_id = \(callbackID)")
            _ = try await service.query("DELETE FROM ci_callback_digests WHERE callback_id = \(callbackID)")
            let client = ConsoleClient(service)

            for path in ["/console/callbacks/\(callbackID)", "/console/callbacks/\(callbackID)/raw"] {
                let page = try await client.send("GET", path)
                #expect(page.status == 404, "\(path)")
                #expect(page.text.contains("not found or pruned by retention"), "\(path): \(page.text)")
                #expect(page.text.contains("CALLBACK_RETENTION"), "\(path) names the setting")
                #expect(!page.text.contains("There is no callback"), "\(path) does not claim it never existed")
            }
            let never = try await client.send("GET", "/console/callbacks/\(callbackID + 1_000_000)")
            #expect(never.status == 404 && never.text.contains("There is no callback"), "an id never handed out")
        }
    }

    static func links(in html: String) -> [String] {
        html.components(separatedBy: #"href=""#).dropFirst().compactMap { $0.split(separator: "\"", maxSplits: 1).first.map(String.init) }
            .map { $0.replacingOccurrences(of: "&amp;", with: "&") }
    }
}
