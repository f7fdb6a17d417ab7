import CIModel
import Testing

// Times PostgreSQL's timestamptz cannot hold (offsets beyond ±15:59, year 0000) read as "not set", like CI's
// `-`: the callback is stored, its raw body and the detail keep the text as received.

@Test(arguments: [
    "2022-06-30T18:42:20+1600", "2022-06-30T18:42:20-16:00", "2022-06-30T18:42:20+1800", "2022-06-30T18:42:20+18:00",
    "2022-06-30T18:42:20+2359", "0000-01-01T00:00:00Z", "0000-06-30T18:42:20+0800",
])
func timestamp_OutsidePostgreSQLsRange_ReadsAsNotSet(text: String) {
    #expect(CITimestamp(ciText: text) == nil)
}

@Test(arguments: [
    ("2022-06-30T18:42:20+1559", "2022-06-30T18:42:20+15:59"), ("2022-06-30T18:42:20-15:59", "2022-06-30T18:42:20-15:59"),
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"), ("0001-01-01T00:00:00+15:59", "0001-01-01T00:00:00+15:59"),
    ("9999-12-31T23:59:59-15:59", "9999-12-31T23:59:59-15:59"),
])
func timestamp_AtTheEdgesOfTheRange_IsKept(text: String, rfc3339: String) throws {
    #expect(try #require(CITimestamp(ciText: text)).rfc3339 == rfc3339)
}

@Test func timestamp_OutOfRange_IsKeptAsReceivedInTheDetail() throws {
    let body = #"{"JobsDetail":{"JobId":"j","State":"Success","CreationTime":"2022-06-30T18:42:20+1800","EndTime":"0000-01-01T00:00:00Z"}}"#
    let job = try #require(try CallbackDecoder.decode(Array(body.utf8)).jobs.first)
    #expect(job.creationTime == nil)
    #expect(job.endTime == nil)
    #expect(job.normalized["CreationTime"] == .text("2022-06-30T18:42:20+1800"))
    #expect(job.normalized["EndTime"] == .text("0000-01-01T00:00:00Z"))
}

/// A query's `since`/`until` only becomes an instant, so RFC 3339's whole offset range is accepted there (found by the
/// contract test: schemathesis sent `until=7341-01-08T17:43:47-21:20`, a schema-valid date-time, and got 400).
@Test func timestamp_ForAnInstantOnly_AcceptsRFC3339sWholeOffsetRange() throws {
    #expect(CITimestamp(ciText: "7341-01-08T17:43:47-21:20") == nil)
    let wide = try #require(CITimestamp(ciText: "7341-01-08T17:43:47-21:20", maxOffsetHours: 23))
    let utc = try #require(CITimestamp(ciText: "7341-01-09T15:03:47Z"))
    #expect(wide.date == utc.date)
    #expect(CITimestamp(ciText: "2026-01-01T00:00:00+24:00", maxOffsetHours: 23) == nil)
}
