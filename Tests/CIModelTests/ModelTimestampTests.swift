import CIModel
import Foundation
import Testing

// CI time text: accepted forms, rejected forms, and RFC 3339 output in the original offset.

@Test(arguments: [
    ("2022-06-30T18:42:20+0800", "2022-06-30T18:42:20+08:00", 1_656_585_740),
    ("2022-08-09 14:54:17+0800", "2022-08-09T14:54:17+08:00", 1_660_028_057),
    ("2022-06-30T18:42:20+08:00", "2022-06-30T18:42:20+08:00", 1_656_585_740),
    ("2022-06-30T10:42:20Z", "2022-06-30T10:42:20Z", 1_656_585_740),
    ("2022-06-30t10:42:20z", "2022-06-30T10:42:20Z", 1_656_585_740),
    ("2022-06-30T10:42:20+0000", "2022-06-30T10:42:20Z", 1_656_585_740),
    ("2022-06-30T05:12:20-05:30", "2022-06-30T05:12:20-05:30", 1_656_585_740),
    ("2022-06-30T18:42:20.250+0800", "2022-06-30T18:42:20.25+08:00", 1_656_585_740),
    ("  2022-06-30T18:42:20+0800\n", "2022-06-30T18:42:20+08:00", 1_656_585_740),
    ("2024-02-29T00:00:00+0800", "2024-02-29T00:00:00+08:00", 1_709_136_000),
    ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z", -1),
    ("2000-01-01T07:59:59+0800", "2000-01-01T07:59:59+08:00", 946_684_799),
])
func timestamp_ParsesCIForms(text: String, rfc3339: String, seconds: Int64) throws {
    let timestamp = try #require(CITimestamp(ciText: text))
    #expect(timestamp.rfc3339 == rfc3339)
    #expect(timestamp.secondsSince1970 == seconds)
    #expect(timestamp.date.timeIntervalSince1970.rounded(.down) == Double(seconds))
}

@Test(arguments: [
    "", "-", " - ", "yesterday", "2022-06-30", "2022-06-30T18:42:20", "2022-13-01T00:00:00Z", "2022-02-29T00:00:00Z",
    "2022-04-31T00:00:00Z", "2022-06-30T24:00:00Z", "2022-06-30T18:60:00Z", "2022-06-30T18:42:60Z",
    "2022-06-30T18:42:20+2400", "2022-06-30T18:42:20+0860", "2022-06-30T18:42:20+08", "2022-06-30T18:42:20.Z",
    "2022-06-30X18:42:20Z", "2022/06/30T18:42:20Z", "2022-06-30T18:42:20Zjunk", "２０２２-06-30T18:42:20Z",
])
func timestamp_RejectsAsNil(text: String) {
    #expect(CITimestamp(ciText: text) == nil)
}

@Test func timestamp_KeepsTheOriginalOffset() throws {
    let east = try #require(CITimestamp(ciText: "2022-06-30T18:42:20+0800"))
    let utc = try #require(CITimestamp(ciText: "2022-06-30T10:42:20Z"))
    #expect(east.date == utc.date)
    #expect(east.utcOffsetSeconds == 28_800)
    #expect(utc.utcOffsetSeconds == 0)
    #expect(east != utc)
}

@Test func timestamp_FractionKeepsNanosecondsAndTrimsZeros() throws {
    let t = try #require(CITimestamp(ciText: "2022-06-30T18:42:20.123456789123+0800"))
    #expect(t.nanoseconds == 123_456_789)
    #expect(t.rfc3339 == "2022-06-30T18:42:20.123456789+08:00")
    #expect(CITimestamp(ciText: "2022-06-30T18:42:20.000+0800")?.rfc3339 == "2022-06-30T18:42:20+08:00")
}

@Test func timestamp_FormatsFromPartsAcrossNegativeOffsetsAndDayBoundaries() {
    let t = CITimestamp(secondsSince1970: 0, utcOffsetSeconds: -3_600)
    #expect(t.rfc3339 == "1969-12-31T23:00:00-01:00")
    #expect(t.description == t.rfc3339)
}

@Test func timestamp_FromDateKeepsTheInstantAndOffset() {
    let t = CITimestamp(date: Date(timeIntervalSince1970: 1_656_585_740.5), utcOffsetSeconds: 28_800)
    #expect(t.secondsSince1970 == 1_656_585_740)
    #expect(t.nanoseconds == 500_000_000)
    #expect(t.rfc3339 == "2022-06-30T18:42:20.5+08:00")
    #expect(CITimestamp(date: Date(timeIntervalSince1970: -0.25)).rfc3339 == "1969-12-31T23:59:59.75Z")
}
