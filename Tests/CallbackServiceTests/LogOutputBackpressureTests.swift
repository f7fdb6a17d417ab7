import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing

@testable import CallbackService

/// A log sink that stops draining (a pipe nobody reads) must cost requests dropped lines, never time.
@Suite("Log output under back-pressure")
struct LogOutputBackpressureTests {
    @Test func logOutput_SinkNeverDrains_CallsReturnPromptlyAndDropBeyondLimitThenMarkTheGapInOrder() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        let (readEnd, writeEnd) = (ends[0], ends[1])
        defer {
            close(readEnd)
            close(writeEnd)
        }
        let filled = fillPipe(writeEnd)

        var configuration = LogOutput.Configuration()
        configuration.bufferLimit = 16 * 1024
        configuration.exitFlushTimeout = .milliseconds(200)
        let output = LogOutput(descriptor: writeEnd, configuration: configuration)

        let threads = 4
        let linesPerThread = 500  // ~4 × 500 × 60 B ≈ 120 KB, far past the 16 KiB limit.
        let slowest = Mutex<Duration>(.zero)
        let finished = Atomic<Int>(0)
        for thread in 0..<threads {
            // Threads, not tasks: today's blocking write would otherwise starve the cooperative pool.
            Thread {
                let clock = ContinuousClock()
                var worst = Duration.zero
                for index in 0..<linesPerThread {
                    let line = Array("t\(thread) \(String(index).padding(toLength: 6, withPad: " ", startingAt: 0)) \(String(repeating: "x", count: 40))\n".utf8)
                    let elapsed = clock.measure { output.write(line, urgent: index % 10 == 0) }
                    worst = max(worst, elapsed)
                }
                slowest.withLock { $0 = max($0, worst) }
                finished.add(1, ordering: .releasing)
            }.start()
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while finished.load(ordering: .acquiring) < threads && ContinuousClock.now < deadline { usleep(10_000) }
        let allReturned = finished.load(ordering: .acquiring) == threads
        #expect(allReturned, "log calls blocked on a sink that does not drain")
        #expect(output.droppedLines > 0, "lines beyond the buffer limit are dropped and counted")
        // An exit flush into the full pipe gives up after its timeout (on a thread: a blocking one would hang the test).
        let flushResult = Atomic<Int>(0)  // 0: still waiting, 1: drained, 2: gave up
        Thread { flushResult.store(output.flush(timeout: .milliseconds(200)) ? 1 : 2, ordering: .releasing) }.start()
        let flushDeadline = ContinuousClock.now + .seconds(5)
        while flushResult.load(ordering: .acquiring) == 0 && ContinuousClock.now < flushDeadline { usleep(10_000) }
        #expect(flushResult.load(ordering: .acquiring) == 2, "a flush into a full pipe gives up after its timeout")

        // The sink catches up: what was buffered arrives, then the marker, then later lines.
        var received: [UInt8] = []
        var skipped = 0
        let drainDeadline = ContinuousClock.now + .seconds(20)
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var loggedAfter = false
        while ContinuousClock.now < drainDeadline {
            var poller = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 50) > 0 {
                let count = read(readEnd, &chunk, chunk.count)
                guard count > 0 else { break }
                let skip = min(count, filled - skipped)
                skipped += skip
                received.append(contentsOf: chunk[skip..<count])
            }
            if !loggedAfter && finished.load(ordering: .acquiring) == threads && output.flush(timeout: .zero) {
                output.write(Array("after\n".utf8), urgent: true)
                loggedAfter = true
            }
            if String(decoding: received, as: UTF8.self).hasSuffix("after\n") { break }
        }
        #expect(finished.load(ordering: .acquiring) == threads)
        #expect(slowest.withLock { $0 } < .milliseconds(100), "slowest log call: \(slowest.withLock { $0 })")

        let lines = String(decoding: received, as: UTF8.self).split(separator: "\n")
        let markers = lines.indices.filter { lines[$0].hasSuffix(" log lines dropped") }
        let logged = lines.filter { $0.hasPrefix("t") }
        let droppedInMarkers = markers.compactMap { Int(lines[$0].split(separator: " ").dropLast(3).last ?? "") }.reduce(0, +)
        #expect(!markers.isEmpty, "a marker line says lines were dropped")
        #expect(droppedInMarkers == output.droppedLines, "the markers account for every dropped line")
        #expect(logged.count + output.droppedLines == threads * linesPerThread, "every line is written or counted as dropped")
        #expect(lines.last == "after", "a line logged after the drops arrives after the marker")
        #expect(markers.allSatisfy { $0 > 0 }, "buffered lines come before the marker of the lines dropped after them")
        for thread in 0..<threads {
            let indices = logged.filter { $0.hasPrefix("t\(thread) ") }.compactMap { Int($0.split(separator: " ")[1]) }
            #expect(indices == indices.sorted(), "thread \(thread)'s lines arrive in the order they were logged")
        }
    }

    /// Fills the pipe's buffer, then makes writes blocking again; returns the bytes written.
    private func fillPipe(_ descriptor: Int32) -> Int {
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
        let block = [UInt8](repeating: UInt8(ascii: "-"), count: 4096)
        var total = 0
        while true {
            let written = block.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress!, $0.count) }
            if written > 0 { total += written } else { break }
        }
        _ = fcntl(descriptor, F_SETFL, flags & ~O_NONBLOCK)
        return total
    }
}
