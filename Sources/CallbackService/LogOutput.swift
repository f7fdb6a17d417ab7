import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Where the service's log lines go: a file descriptor (standard error), written in batches.
///
/// With one access-log line per request, a `write(2)` per line was a visible share of a lookup's CPU.
/// Lines are instead appended to a buffer and written by a background thread every
/// ``flushInterval`` (or at once when the buffer passes ``flushThreshold``). Lines at `warning` and above
/// are written before `log` returns, together with everything buffered before them, so the order of lines
/// is kept and a problem is never held back. On a normal exit the buffer is flushed (``flush()`` from the
/// command, and an `atexit` hook); a crash loses at most the last interval's info lines.
public final class LogOutput: Sendable {
    /// Standard error, the service's log stream.
    public static let standardError = LogOutput(descriptor: STDERR_FILENO)

    /// Longest time a line waits in the buffer.
    public let flushInterval: Duration
    /// Buffered bytes that trigger an immediate write.
    public let flushThreshold: Int

    private let descriptor: Int32
    /// Appenders (any thread) and the flusher share the buffer.
    private let buffer = Mutex<[UInt8]>([])
    /// Held across take-and-write, so chunks reach the descriptor in the order their lines were appended.
    private let writeLock = Mutex(())
    private let flusherStarted = Atomic<Bool>(false)

    init(descriptor: Int32, flushInterval: Duration = .milliseconds(100), flushThreshold: Int = 64 * 1024) {
        self.descriptor = descriptor
        self.flushInterval = flushInterval
        self.flushThreshold = flushThreshold
    }

    /// Appends one line (newline included); `urgent` writes it, and what is buffered before it, now.
    public func write(_ line: [UInt8], urgent: Bool) {
        let size = buffer.withLock { buffer in
            buffer.append(contentsOf: line)
            return buffer.count
        }
        if urgent || size >= flushThreshold {
            flush()
        } else {
            startFlusherIfNeeded()
        }
    }

    /// Writes everything buffered.
    public func flush() {
        writeLock.withLock { _ in
            let chunk = buffer.withLock { buffer in
                defer { buffer.removeAll(keepingCapacity: true) }
                return buffer
            }
            Self.writeAll(chunk, to: descriptor)
        }
    }

    private func startFlusherIfNeeded() {
        guard !flusherStarted.load(ordering: .relaxed),
            flusherStarted.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        if descriptor == STDERR_FILENO {
            atexit { LogOutput.standardError.flush() }
        }
        let interval = flushInterval
        let thread = Thread { [self] in
            let (seconds, attoseconds) = interval.components
            let micros = UInt32(clamping: seconds * 1_000_000 + attoseconds / 1_000_000_000_000)
            while true {
                usleep(micros)
                if !buffer.withLock({ $0.isEmpty }) { flush() }
            }
        }
        thread.name = "log-flush"
        thread.start()
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
