#if canImport(Glibc)
import Glibc
#endif

/// The process's open-file limit (`RLIMIT_NOFILE`), which bounds how many connections a server can hold:
/// every connection is a descriptor, and an `accept` beyond the limit fails with `EMFILE`.
public enum OpenFileLimit {
    /// The soft limit before and after ``raiseToHardLimit()``, and the hard limit.
    public struct Outcome: Sendable, Hashable {
        public var before: UInt64
        public var after: UInt64
        public var hard: UInt64
    }

    /// Raises the soft limit to the hard limit, the most an unprivileged process may take (systemd and
    /// many shells start services at a soft 1,024 under a hard limit of 500,000 or more). Returns nil when
    /// the limit cannot be read; `after` equals `before` when it cannot be raised.
    public static func raiseToHardLimit() -> Outcome? {
        var limit = rlimit()
        guard getrlimit(resourceNoFile, &limit) == 0 else { return nil }
        let before = UInt64(limit.rlim_cur)
        let hard = UInt64(limit.rlim_max)
        guard limit.rlim_cur < limit.rlim_max else { return Outcome(before: before, after: before, hard: hard) }
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        guard setrlimit(resourceNoFile, &raised) == 0 else { return Outcome(before: before, after: before, hard: hard) }
        return Outcome(before: before, after: hard, hard: hard)
    }

    /// Descriptors the server needs besides counted connections: per event loop its epoll set, its eventfd
    /// and up to 256 connections held only to be refused; plus `otherDescriptors` for the rest of the
    /// process (database connections, log files, standard streams).
    public static func reservedDescriptors(eventLoops: Int, otherDescriptors: Int) -> Int {
        max(1, eventLoops) * (2 + 256) + max(0, otherDescriptors)
    }

    /// The most connections `limit` descriptors hold after `reserved` ones, at least 1; `requested` when it fits.
    public static func connections(requested: Int, limit: UInt64, reserved: Int) -> Int {
        let available = limit > UInt64(Int.max) ? Int.max : Int(limit)
        return max(1, min(requested, available - reserved))
    }

    #if os(Linux)
    private static let resourceNoFile = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resourceNoFile = RLIMIT_NOFILE
    #endif
}
