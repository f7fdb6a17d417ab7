import Foundation
import Testing

@Suite("History paging")
struct ServiceHistoryPagingTests {
    private static func callback(jobID: String, progress: Int) -> [UInt8] {
        Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Running","Tag":"Transcode","Progress":"\#(progress)"}}"#.utf8)
    }

    @Test func history_pagesOldestFirst_eachCallbackOnce_withoutCursorOnTheLastPage() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            for progress in 0..<7 {
                #expect(try await service.post("/v1/callbacks", Self.callback(jobID: jobID, progress: progress)).status == 200)
            }
            var seen: [Int] = []
            var cursor: String?
            var pages = 0
            repeat {
                let reply = try await service.get("/v1/jobs/\(jobID)/callbacks?limit=3" + (cursor.map { "&cursor=\($0)" } ?? ""))
                #expect(reply.status == 200)
                let page = try reply.json()
                #expect(page["JobId"] as? String == jobID)
                let callbacks = try #require(page["Callbacks"] as? [[String: Any]])
                #expect(callbacks.count <= 3)
                seen += callbacks.compactMap { $0["CallbackId"] as? Int }
                cursor = page["NextCursor"] as? String
                pages += 1
            } while cursor != nil && pages < 10
            #expect(pages == 3)
            #expect(seen.count == 7)
            #expect(seen == seen.sorted(), "oldest first")
            #expect(Set(seen).count == 7, "each callback once")

            let whole = try await service.get("/v1/jobs/\(jobID)/callbacks").json()
            #expect((whole["Callbacks"] as? [Any])?.count == 7, "without paging parameters a short history comes whole, as before")
            #expect(whole["NextCursor"] is NSNull, "and says no page follows")
        }
    }

    @Test func history_badPagingParameters_are400_unknownJob404EvenWithACursor() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID: jobID, progress: 1))
            for query in ["limit=0", "limit=1001", "limit=x", "cursor=nonsense", "limit=1&limit=2", "page=2"] {
                let reply = try await service.get("/v1/jobs/\(jobID)/callbacks?\(query)")
                #expect(reply.status == 400, "\(query)")
                let error = try #require(try reply.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "InvalidParameter", "\(query)")
            }
            let first = try await service.get("/v1/jobs/\(jobID)/callbacks?limit=1").json()
            let id = try #require((first["Callbacks"] as? [[String: Any]])?.first?["CallbackId"] as? Int)
            let past = Data("c:\(id)".utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
            let end = try await service.get("/v1/jobs/\(jobID)/callbacks?cursor=\(past)")
            #expect(end.status == 200, "past the last page of a known job: an empty page")
            #expect((try end.json()["Callbacks"] as? [Any])?.isEmpty == true)
            let unknown = try await service.get("/v1/jobs/jnope/callbacks?cursor=\(past)")
            #expect(unknown.status == 404)
        }
    }
}
