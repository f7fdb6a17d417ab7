import Testing

@testable import CallbackService

/// The lookups' query parameters: what is shortened, what is refused, and what the refusal says.
@Suite("Lookup parameters")
struct LookupParameterTests {
    @Test func wait_LongerThanTheMaximum_IsShortenedToIt() throws {
        let maximum = Duration.seconds(60)
        #expect(try CallbackApplication.waitParameter([("wait", "10m")], maximum: maximum) == maximum)
        #expect(try CallbackApplication.waitParameter([("wait", "61s")], maximum: maximum) == maximum)
        #expect(try CallbackApplication.waitParameter([("wait", "60s")], maximum: maximum) == maximum)
        #expect(try CallbackApplication.waitParameter([("wait", "30s")], maximum: maximum) == .seconds(30))
        #expect(try CallbackApplication.waitParameter([], maximum: maximum) == nil)
    }

    @Test func wait_NotADuration_IsRefusedSayingTheLimit() {
        for value in ["forever", "-1", "1h"] {
            #expect(throws: APIError.self, "\(value)") {
                try CallbackApplication.waitParameter([("wait", value)], maximum: .seconds(60))
            }
        }
        do {
            _ = try CallbackApplication.waitParameter([("wait", "soon")], maximum: .seconds(60))
            Issue.record("wait=soon accepted")
        } catch let error as APIError {
            #expect(error.message.contains("shortened to it"), "\(error.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func since_WithARawPlusOffset_SaysToSendItAsPercent2B() {
        // `since=2026-01-31T08:00:00+08:00` unencoded: the query decoder turns `+` into a space.
        for name in ["since", "until"] {
            do {
                _ = try CallbackApplication.jobListQuery([(name, "2026-01-31T08:00:00 08:00")])
                Issue.record("\(name) with a space accepted")
            } catch let error as APIError {
                #expect(error.code == "InvalidParameter")
                #expect(error.message.contains("%2B"), "\(error.message)")
            } catch {
                Issue.record("\(error)")
            }
        }
        // An encoded offset is fine.
        #expect((try? CallbackApplication.jobListQuery([("since", "2026-01-31T08:00:00+08:00")])) != nil)
    }
}
