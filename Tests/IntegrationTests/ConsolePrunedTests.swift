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

    static func links(in html: String) -> [String] {
        html.components(separatedBy: #"href=""#).dropFirst().compactMap { $0.split(separator: "\"", maxSplits: 1).first.map(String.init) }
            .map { $0.replacingOccurrences(of: "&amp;", with: "&") }
    }
}
