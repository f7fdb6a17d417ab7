import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import TimeUnits
import CIModel
import Synchronization

/// Where the service's log lines go: a file descriptor (standard error), written in batches by one thread.
///
/// With one access-log line per request, a `write(2)` per line was a visible share of a lookup's CPU.
/// Lines are instead appended to a buffer and written by a background thread every
/// ``Configuration/flushInterval``, at once when the buffer passes ``Configuration/flushThreshold``, and at
/// once after a line at `warning` or above (which therefore reaches the sink together with everything
/// before it, in order). Only that thread writes to the descriptor, and never under the lock that
/// ``write(_:urgent:)`` takes, so a sink that stops draining (a back-pressured pipe to a slow log shipper)
/// never blocks a request: lines beyond ``Configuration/bufferLimit`` are dropped and counted
/// (``droppedLines``), and once the sink catches up a line `N log lines dropped` marks the gap where it
/// happened. At exit (an `atexit` hook for standard error) ``flush(timeout:)`` writes what is buffered, but
/// waits at most ``Configuration/exitFlushTimeout``; a crash loses at most the last interval's lines.
public final class LogOutput: Sendable {
    /// How lines are batched and how much may wait for a slow sink.
    public struct Configuration: Sendable, Hashable {
        /// Longest time a line waits in the buffer. Default: 100 ms.
        public var flushInterval: Duration = .milliseconds(100)
        /// Buffered bytes that wake the writer at once. Default: 64 KiB.
        public var flushThreshold = 64 * 1024
        /// Most bytes held for the sink, the chunk being written included; lines beyond it are dropped
        /// (`LOG_BUFFER_BYTES`). Default: 4 MiB.
        public var bufferLimit = 4 * 1024 * 1024
        /// The layout of the `N log lines dropped` line, which LogOutput writes itself: the same as the
        /// handler's lines (`LOG_FORMAT`), so a JSON log shipper can parse it. Default: text.
        public var format: ServiceLogHandler.Format = .text
        /// Longest wait at exit for the sink to take what is buffered. Default: 2 s.
        public var exitFlushTimeout: Duration = .seconds(2)

        public init() {}
    }

    /// Standard error, the service's log stream.
    public static let standardError = LogOutput(descriptor: STDERR_FILENO)

    public let configuration: Configuration
    /// Longest time a line waits in the buffer.
    public var flushInterval: Duration { configuration.flushInterval }
    /// Buffered bytes that wake the writer at once.
    public var flushThreshold: Int { configuration.flushThreshold }

    /// What appenders (any thread) and the writer thread share; held only to append or to swap buffers.
    private struct State: ~Copyable {
        var pending: [UInt8] = []
        /// Bytes the writer took and has not finished writing; they count against the limit.
        var inFlight = 0
        /// Lines dropped since the last marker line was placed.
        var droppedSinceMarker = 0
        var droppedTotal = 0
        /// Set when the writer has been woken for the current buffer, so a crossing signals once.
        var wakeRequested = false
        /// ``Configuration/bufferLimit`` and ``Configuration/format``, settable once the output exists
        /// (``configure(bufferLimit:format:)``): standard error's is made before the settings are read.
        var bufferLimit: Int
        var format: ServiceLogHandler.Format
    }

    private let descriptor: Int32
    private let state: Mutex<State>
    /// Wakes the writer before its interval ends (a warning, the threshold, a flush).
    private let wake = DispatchSemaphore(value: 0)
    /// Signalled by the writer after each write, for ``flush(timeout:)``.
    private let wrote = DispatchSemaphore(value: 0)
    private let flushWaiters = Atomic<Int>(0)
    private let writerStarted = Atomic<Bool>(false)

    init(descriptor: Int32, configuration: Configuration = Configuration()) {
        self.descriptor = descriptor
        self.configuration = configuration
        self.state = Mutex(State(bufferLimit: configuration.bufferLimit, format: configuration.format))
    }

    /// Sets how much may wait for the sink (`LOG_BUFFER_BYTES`) and the layout of the dropped-lines line
    /// (`LOG_FORMAT`); the service calls it on ``standardError`` once its settings are read.
    public func configure(bufferLimit: Int, format: ServiceLogHandler.Format) {
        state.withLock { state in
            state.bufferLimit = bufferLimit
            state.format = format
        }
    }

    /// Lines dropped since start because the sink was slower than the logs.
    public var droppedLines: Int { state.withLock { $0.droppedTotal } }

    /// Appends one line (newline included); `urgent` wakes the writer at once. Never waits for the sink.
    public func write(_ line: [UInt8], urgent: Bool) {
        let threshold = configuration.flushThreshold
        let signal = state.withLock { state -> Bool in
            guard state.pending.count + state.inFlight + line.count <= state.bufferLimit else {
                state.droppedSinceMarker += 1
                state.droppedTotal += 1
                return false
            }
            if state.droppedSinceMarker > 0 {
                state.pending.append(contentsOf: Self.droppedMarker(state.droppedSinceMarker, format: state.format))
                state.droppedSinceMarker = 0
            }
            state.pending.append(contentsOf: line)
            guard !state.wakeRequested, urgent || state.pending.count >= threshold else { return false }
            state.wakeRequested = true
            return true
        }
        startWriterIfNeeded()
        if signal { wake.signal() }
    }

    /// Asks the writer to write everything buffered and waits for it, at most `timeout`
    /// (default ``Configuration/exitFlushTimeout``); returns whether the buffer was emptied in time.
    @discardableResult
    public func flush(timeout: Duration? = nil) -> Bool {
        let deadline = ContinuousClock.now + (timeout ?? configuration.exitFlushTimeout)
        flushWaiters.add(1, ordering: .relaxed)
        defer { flushWaiters.subtract(1, ordering: .relaxed) }
        while true {
            let drained = state.withLock { $0.pending.isEmpty && $0.inFlight == 0 && $0.droppedSinceMarker == 0 }
            if drained { return true }
            guard writerStarted.load(ordering: .acquiring) else { return false }
            wake.signal()
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return false }
            _ = wrote.wait(timeout: .now() + .nanoseconds(Int(min(remaining, configuration.flushInterval).inNanoseconds)))
        }
    }

    private func startWriterIfNeeded() {
        guard !writerStarted.load(ordering: .relaxed),
            writerStarted.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        if descriptor == STDERR_FILENO {
            atexit { LogOutput.standardError.flush() }
        }
        let thread = Thread { [self] in runWriter() }
        thread.name = "log-flush"
        thread.start()
    }

    /// The writer thread: swaps the buffer out under the lock, writes it outside.
    private func runWriter() {
        let interval = Int(configuration.flushInterval.inNanoseconds)
        var chunk: [UInt8] = []
        while true {
            _ = wake.wait(timeout: .now() + .nanoseconds(interval))
            state.withLock { state in
                swap(&state.pending, &chunk)
                state.wakeRequested = false
                if state.droppedSinceMarker > 0 {  // Nothing accepted since the drops: the marker ends the chunk.
                    chunk.append(contentsOf: Self.droppedMarker(state.droppedSinceMarker, format: state.format))
                    state.droppedSinceMarker = 0
                }
                state.inFlight = chunk.count
            }
            if !chunk.isEmpty {
                Self.writeAll(chunk, to: descriptor)
                chunk.removeAll(keepingCapacity: chunk.capacity <= configuration.flushThreshold * 2)
                state.withLock { $0.inFlight = 0 }
            }
            if flushWaiters.load(ordering: .relaxed) > 0 { wrote.signal() }
        }
    }

    /// The line that marks where `count` lines were dropped, in the handler's layout.
    static func droppedMarker(_ count: Int, format: ServiceLogHandler.Format) -> [UInt8] {
        switch format {
        case .text:
            return Array("\(LogTimestamp.now()) warning ci-callbackd : log.dropped_lines=\(count) [CallbackService] \(count) log lines dropped\n".utf8)
        case .json:
            var json = JSONWriter(reservingCapacity: 160)
            json.beginObject()
            json.member("time", LogTimestamp.now())
            json.member("level", "warning")
            json.member("label", "ci-callbackd")
            json.member("message", "log lines dropped")
            json.member("source", "CallbackService")
            json.member("log.dropped_lines", String(count))
            json.endObject()
            return json.bytes + [0x0A]
        }
    }

    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    return  // Nowhere left to report a failing log stream.
                }
            }
        }
    }
}

/// RFC 3339 UTC timestamps with milliseconds (`2026-11-25T12:27:20.123Z`) for log lines, without
/// Foundation's formatters or the C library's local-time conversion (which stats `/etc/localtime` on every
/// call): both showed in per-request profiles.
enum LogTimestamp {
    static func now() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let millis = Int(spec.tv_nsec) / 1_000_000
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        func digits(_ value: Int, _ count: Int) {
            var divisor = 1
            for _ in 1..<count { divisor *= 10 }
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        bytes.append(UInt8(ascii: "."))
        digits(millis, 3)
        bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }
}
