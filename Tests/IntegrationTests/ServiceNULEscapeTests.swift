import Foundation
import Testing

/// `%00` in a lookup path or filter was bound as a text value with a NUL byte, which PostgreSQL refuses:
/// a 500, found by the input fuzz. No stored JobId, tag or queue id contains U+0000, so the answer is the
/// ordinary one for a value that matches nothing.
@Suite("NUL escapes")
struct ServiceNULEscapeTests {
    @Test func nulEscapeInALookup_is404_andInAFilter_anEmptyPage() async throws {
        try await ServiceHarness.with { service in
            for path in ["/v1/jobs/%00abc", "/v1/jobs/%00/watermark", "/v1/jobs/a%00/callbacks", "/v1/jobs/%00/callbacks/1/body"] {
                let reply = try await service.get(path)
                #expect(reply.status == 404, "\(path): \(reply.text)")
            }
            for query in ["tag=%00", "queueId=a%00"] {
                let reply = try await service.get("/v1/jobs?\(query)")
                #expect(reply.status == 200, "\(query): \(reply.text)")
                #expect((try reply.json()["Jobs"] as? [Any])?.isEmpty == true)
            }
        }
    }
}
