#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// An instant as CI writes it, together with the UTC offset it was written in.
///
/// CI writes `2022-06-30T18:42:20+0800` (no colon in the offset), and a space instead of `T` in
/// WorkflowFinish bodies. Parsing and formatting are hand-written: `DateFormatter` is slow and
/// locale-dependent, and the offset must survive a round trip.
public struct CITimestamp: Sendable, Hashable, CustomStringConvertible {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    public var secondsSince1970: Int64
    /// Fraction of the second, 0..<1_000_000_000.
    public var nanoseconds: Int
    /// The offset from UTC the text was written in, in seconds (`+0800` is 28_800).
    public var utcOffsetSeconds: Int

    /// The instant.
    public var date: Date {
        Date(timeIntervalSince1970: Double(secondsSince1970) + Double(nanoseconds) / 1_000_000_000)
    }

    /// Creates a timestamp from its parts.
    /// - Parameters:
    ///   - secondsSince1970: whole seconds since the Unix epoch.
    ///   - nanoseconds: fraction of the second, 0..<1_000_000_000.
    ///   - utcOffsetSeconds: the offset ``rfc3339`` writes the instant in.
    public init(secondsSince1970: Int64, nanoseconds: Int = 0, utcOffsetSeconds: Int = 0) {
        self.secondsSince1970 = secondsSince1970
        self.nanoseconds = nanoseconds
        self.utcOffsetSeconds = utcOffsetSeconds
    }

    /// Creates a timestamp for `date`, to be written in `utcOffsetSeconds` (nanosecond precision).
    public init(date: Date, utcOffsetSeconds: Int = 0) {
        let interval = date.timeIntervalSince1970
        let seconds = interval.rounded(.down)
        var nanos = Int(((interval - seconds) * 1_000_000_000).rounded())
        var whole = Int64(seconds)
        if nanos >= 1_000_000_000 {
            nanos -= 1_000_000_000
            whole += 1
        }
        self.init(secondsSince1970: whole, nanoseconds: nanos, utcOffsetSeconds: utcOffsetSeconds)
    }

    /// Parses CI's time text.
    ///
    /// Accepts `YYYY-MM-DD` then `T`, `t` or a space, then `hh:mm:ss`, optional fractional seconds
    /// (up to 9 digits are kept), then `Z`, `z`, `±hhmm` or `±hh:mm`. Surrounding ASCII whitespace is
    /// ignored. Returns nil for `-` and `""` (CI's "not set yet") and for anything malformed or out of
    /// range (month 13, February 30, hour 24, second 60): a bad time is not worth failing a callback for.
    ///
    /// The range is what PostgreSQL's `timestamptz` stores: years 0001–9999 (it has no year 0, and four
    /// digits cannot say more than 9999; it would take up to 294276) and offsets up to ±15:59 (beyond, it
    /// refuses the value: "time zone displacement out of range"). A time outside it is nil as well, so the
    /// job's column is NULL while the detail keeps the text as received, and the callback is stored.
    ///
    /// - Parameter maxOffsetHours: the largest UTC offset accepted. A time that only becomes an instant (a
    ///   query's `since`, never stored as text) may take RFC 3339's whole range, 23.
    public init?(ciText: some StringProtocol, maxOffsetHours: Int = CITimestamp.maxOffsetHours) {
        var utf8 = Array(ciText.utf8)
        while let last = utf8.last, last == Ascii.space || last == Ascii.tab || last == Ascii.lf || last == Ascii.cr {
            utf8.removeLast()
        }
        var start = 0
        while start < utf8.count, utf8[start] == Ascii.space || utf8[start] == Ascii.tab || utf8[start] == Ascii.lf || utf8[start] == Ascii.cr {
            start += 1
        }
        guard let parsed = utf8.withUnsafeBufferPointer({ Self.parse(UnsafeBufferPointer(rebasing: $0[start...]), maxOffsetHours: maxOffsetHours) }) else {
            return nil
        }
        self = parsed
    }

    /// PostgreSQL's largest UTC offset is 15:59:59 (`MAX_TZDISP_HOUR`); whole minutes are all CI writes.
    public static let maxOffsetHours = 15

    private static func parse(_ b: UnsafeBufferPointer<UInt8>, maxOffsetHours: Int) -> CITimestamp? {
        guard b.count >= 20 else { return nil }
        func digits(_ at: Int, _ count: Int) -> Int? {
            var value = 0
            for k in at..<(at + count) {
                let c = b[k]
                guard c >= Ascii.zero, c <= Ascii.nine else { return nil }
                value = value * 10 + Int(c - Ascii.zero)
            }
            return value
        }
        guard let year = digits(0, 4), b[4] == Ascii.dash, let month = digits(5, 2), b[7] == Ascii.dash,
            let day = digits(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == Ascii.space,
            let hour = digits(11, 2), b[13] == Ascii.colon, let minute = digits(14, 2), b[16] == Ascii.colon,
            let second = digits(17, 2)
        else { return nil }
        guard year >= 1, (1...12).contains(month), day >= 1, day <= daysInMonth(year: year, month: month),
            hour <= 23, minute <= 59, second <= 59
        else { return nil }

        var i = 19
        var nanos = 0
        if b[i] == Ascii.dot {
            i += 1
            let fractionStart = i
            var scale = 100_000_000
            while i < b.count, b[i] >= Ascii.zero, b[i] <= Ascii.nine {
                nanos += Int(b[i] - Ascii.zero) * scale
                scale /= 10
                i += 1
            }
            guard i > fractionStart, i < b.count else { return nil }
        }

        let offset: Int
        let zoneLength = b.count - i
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard zoneLength == 1 else { return nil }
            offset = 0
        case Ascii.plus, Ascii.dash:
            let sign = b[i] == Ascii.dash ? -1 : 1
            let hours: Int?
            let minutes: Int?
            if zoneLength == 5 {
                hours = digits(i + 1, 2)
                minutes = digits(i + 3, 2)
            } else if zoneLength == 6, b[i + 3] == Ascii.colon {
                hours = digits(i + 1, 2)
                minutes = digits(i + 4, 2)
            } else {
                return nil
            }
            guard let hours, let minutes, hours <= maxOffsetHours, minutes <= 59 else { return nil }
            offset = sign * (hours * 3600 + minutes * 60)
        default:
            return nil
        }

        let days = daysFromCivil(year: year, month: month, day: day)
        let local = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
        return CITimestamp(
            secondsSince1970: local - Int64(offset),
            nanoseconds: nanos,
            utcOffsetSeconds: offset
        )
    }

    /// RFC 3339 in the original offset: `2022-06-30T18:42:20+08:00`, `Z` for UTC, and fractional
    /// seconds (trailing zeros trimmed) only when present.
    public var rfc3339: String {
        let local = secondsSince1970 + Int64(utcOffsetSeconds)
        let days = local >= 0 ? local / 86_400 : (local - 86_399) / 86_400
        let secondOfDay = Int(local - days * 86_400)
        let (year, month, day) = Self.civilFromDays(Int(days))
        var out: [UInt8] = []
        out.reserveCapacity(36)
        func append(_ value: Int, width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var v = value
            while divisor > 0 {
                out.append(Ascii.zero + UInt8(v / divisor % 10))
                v %= divisor
                divisor /= 10
            }
        }
        if year < 0 || year > 9999 {
            // Outside RFC 3339's four-digit years; cannot come from CI text, only from init(secondsSince1970:).
            out.append(contentsOf: Array(String(year).utf8))
        } else {
            append(year, width: 4)
        }
        out.append(Ascii.dash)
        append(month, width: 2)
        out.append(Ascii.dash)
        append(day, width: 2)
        out.append(UInt8(ascii: "T"))
        append(secondOfDay / 3600, width: 2)
        out.append(Ascii.colon)
        append(secondOfDay / 60 % 60, width: 2)
        out.append(Ascii.colon)
        append(secondOfDay % 60, width: 2)
        if nanoseconds > 0 {
            out.append(Ascii.dot)
            var fraction = nanoseconds
            var width = 9
            while fraction % 10 == 0 {
                fraction /= 10
                width -= 1
            }
            append(fraction, width: width)
        }
        if utcOffsetSeconds == 0 {
            out.append(UInt8(ascii: "Z"))
        } else {
            let magnitude = abs(utcOffsetSeconds)
            out.append(utcOffsetSeconds < 0 ? Ascii.dash : Ascii.plus)
            append(magnitude / 3600, width: 2)
            out.append(Ascii.colon)
            append(magnitude / 60 % 60, width: 2)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The ``rfc3339`` form.
    public var description: String { rfc3339 }

    // MARK: Calendar arithmetic (proleptic Gregorian; H. Hinnant's days_from_civil / civil_from_days)

    static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civilFromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
