import Foundation
import HTTPListener
import HTTPWire
import Logging
import Synchronization
import Testing

@testable import CallbackService

/// Refusal logging is rate-limited per reason: a flood is summed up, not written line by line. The clock
/// is injected: no test waits.
@Suite("Log rate limiting")
struct LogRateLimiterTests {
    let start = ContinuousClock.now

    @Test func limiter_LetsTheBurstThroughThenSuppresses() {
        var limiter = LogRateLimiter<String>(burst: 3, interval: .seconds(10))
        let decisions = (0..<5).map { step in limiter.shouldLog("a", at: start + .milliseconds(step)) }
        #expect(decisions == [true, true, true, false, false])
        let early = limiter.drain(at: start + .seconds(9))
        #expect(early.isEmpty)
    }

    @Test func limiter_SummarisesTheSuppressedWhenTheIntervalEnds_ThenStartsAgain() {
        var limiter = LogRateLimiter<String>(burst: 2, interval: .seconds(10))
        for step in 0..<7 { _ = limiter.shouldLog("a", at: start + .seconds(step)) }
        let summaries = limiter.drain(at: start + .seconds(10))
        #expect(summaries.map(\.key) == ["a"] && summaries.map(\.suppressed) == [5])
        let again = limiter.drain(at: start + .seconds(11))
        #expect(again.isEmpty)
        let next = limiter.shouldLog("a", at: start + .seconds(11))
        #expect(next)
    }

    @Test func limiter_KeysAreIndependent() {
        var limiter = LogRateLimiter<String>(burst: 1, interval: .seconds(10))
        let decisions = [limiter.shouldLog("a", at: start), limiter.shouldLog("a", at: start), limiter.shouldLog("b", at: start)]
        #expect(decisions == [true, false, true])
        let summaries = limiter.drain(at: start + .seconds(10))
        #expect(summaries.map(\.key) == ["a"])
    }

    @Test func limiter_AnIntervalWithNothingSuppressedEndsSilently() {
        var limiter = LogRateLimiter<String>(burst: 5, interval: .seconds(1))
        let first = limiter.shouldLog("a", at: start)
        let summaries = limiter.drain(at: start + .seconds(2))
        #expect(first && summaries.isEmpty)
    }

    @Test func recorder_FloodLogsTheBurstThenOneSummaryLine() throws {
        let lines = Mutex<[[String: String]]>([])
        let logger = Logger(label: "test") { label in
            ServiceLogHandler(label: label, format: .json) { line in
                let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] ?? [:]
                lines.withLock { $0.append(object.compactMapValues { $0 as? String }) }
            }
        }
        let clock = Mutex(start)
        let recorder = ListenerRefusalRecorder(
            metrics: ServiceMetrics(), logger: logger, burst: 3, interval: .seconds(10), now: { clock.withLock { $0 } })
        let refusal = HTTPRefusal(reason: .atCapacity, status: .serviceUnavailable, message: "too many open connections", remoteAddress: "10.0.0.1")
        for _ in 0..<100 { recorder.record(refusal, response: nil) }
        #expect(lines.withLock { $0 }.count == 3)
        clock.withLock { $0 = start + .seconds(10) }
        recorder.record(HTTPRefusal(reason: .malformed, status: .badRequest, message: "malformed method", remoteAddress: "10.0.0.2"), response: nil)
        let all = lines.withLock { $0 }
        #expect(all.map { $0["message"] ?? "" } == Array(repeating: "http request refused", count: 3) + ["http listener refusals suppressed", "http request refused"])
        #expect(all[3]["http.refusal"] == "at_capacity" && all[3]["log.suppressed"] == "97")
        #expect(all[0]["level"] == "warning" && all[4]["level"] == "notice")
        #expect(all[4]["net.peer"] == "10.0.0.2" && all[4]["http.status"] == "400")
    }

    @Test func recorder_SummaryOfAFloodThatStoppedIsWrittenOnTheNextScrape() {
        let lines = Mutex<[[String: String]]>([])
        let logger = Logger(label: "test") { label in
            ServiceLogHandler(label: label, format: .json) { line in
                let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] ?? [:]
                lines.withLock { $0.append(object.compactMapValues { $0 as? String }) }
            }
        }
        let clock = Mutex(start)
        let recorder = ListenerRefusalRecorder(
            metrics: ServiceMetrics(), logger: logger, burst: 2, interval: .seconds(10), now: { clock.withLock { $0 } })
        let refusal = HTTPRefusal(reason: .requestTimeout, status: .requestTimeout, message: "request not received in time", remoteAddress: "10.0.0.1")
        for _ in 0..<50 { recorder.record(refusal, response: nil) }
        recorder.writeSummaries()
        #expect(lines.withLock { $0 }.count == 2, "nothing more before the interval ends")
        clock.withLock { $0 = start + .seconds(10) }
        recorder.writeSummaries()
        let last = lines.withLock { $0 }.last ?? [:]
        #expect(last["message"] == "http listener refusals suppressed" && last["http.refusal"] == "request_timeout" && last["log.suppressed"] == "48")
    }
}
