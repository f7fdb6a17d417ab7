import Foundation

/// Instants as PostgreSQL stores them: whole microseconds since 1970 (`timestamptz` resolution), the form
/// they are bound to SQL and compared in.
extension Date {
    /// Microseconds since 1970-01-01 00:00 UTC, rounded to the nearest.
    public var microsecondsSince1970: Int64 {
        Int64((timeIntervalSince1970 * 1_000_000).rounded())
    }

    /// The instant `microseconds` after 1970-01-01 00:00 UTC.
    public init(microsecondsSince1970 microseconds: Int64) {
        self.init(timeIntervalSince1970: TimeInterval(microseconds) / 1_000_000)
    }
}
