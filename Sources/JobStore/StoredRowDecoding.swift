import PostgresLibPQ

/// A row the store read does not have the shape this build expects: a column is missing, NULL where the
/// schema says it cannot be, or of another type. The database answered, but its schema is not the one the
/// migrations made (an operator's manual change, a half-applied migration, the wrong `search_path`), so
/// the read fails instead of inventing a zero, an empty string or a default.
///
/// The service answers such a failure with 500 InternalError and logs it once, naming the column.
public struct StoredRowError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Base: Sendable, Hashable {
        case missing
        case null
        case mistyped(expected: String, typeOID: UInt32, text: String?)
    }

    /// Which read decoded the row, for example `job lookup`.
    public var read: String
    /// The column the read expected.
    public var column: String
    private var base: Base

    /// The result had no column of that name.
    public var isMissing: Bool { base == .missing }
    /// The column was NULL where the schema does not allow it.
    public var isNull: Bool { base == .null }
    /// The column's type or text was not the one expected.
    public var isMistyped: Bool { if case .mistyped = base { true } else { false } }

    static func missing(_ column: String, read: String) -> StoredRowError { StoredRowError(read: read, column: column, base: .missing) }
    static func null(_ column: String, read: String) -> StoredRowError { StoredRowError(read: read, column: column, base: .null) }
    static func mistyped(_ cell: PostgresCell, expected: String, read: String) -> StoredRowError {
        StoredRowError(read: read, column: cell.columnName, base: .mistyped(expected: expected, typeOID: cell.typeOID, text: cell.string))
    }

    /// Names the read and the column, never the value (it may be a customer's data).
    public var description: String {
        switch base {
        case .missing: "StoredRowError: \(read) found no column \(column); the database schema is not the one this build migrates to"
        case .null: "StoredRowError: \(read) found NULL in column \(column), which the schema does not allow"
        case .mistyped(let expected, let typeOID, _):
            "StoredRowError: \(read) found column \(column) of type OID \(typeOID) or unreadable text where it expects \(expected)"
        }
    }
}

/// One result row read strictly: every accessor names its column and throws ``StoredRowError`` when the
/// column is absent, NULL where it must not be, or of another type. The optional accessors allow NULL
/// only, never a missing or mistyped column.
struct StrictRow {
    private let row: PostgresRow
    /// Which read this is, for the error.
    let read: String

    init(_ row: PostgresRow, read: String) {
        self.row = row
        self.read = read
    }

    // `pg_type` OIDs each accessor accepts. Switches, not sets: every column of every row read is checked,
    // and hashing an OID per cell showed in lookup profiles.
    private static func isText(_ oid: UInt32) -> Bool {
        switch oid {
        case 25, 1043, 1042, 19: true  // text, varchar, bpchar, name
        default: false
        }
    }
    private static func isInteger(_ oid: UInt32) -> Bool {
        switch oid {
        case 20, 21, 23: true  // int8, int2, int4
        default: false
        }
    }
    private static let boolOID: UInt32 = 16
    private static let byteaOID: UInt32 = 17
    private static let float8OID: UInt32 = 701
    private static let textArrayOID: UInt32 = 1009

    func cell(_ column: String) throws(StoredRowError) -> PostgresCell {
        guard let cell = row.cell(named: column) else { throw .missing(column, read: read) }
        return cell
    }

    func optionalString(_ column: String) throws(StoredRowError) -> String? {
        let cell = try cell(column)
        guard !cell.isNull else { return nil }
        guard Self.isText(cell.typeOID), let text = cell.string else { throw .mistyped(cell, expected: "text", read: read) }
        return text
    }

    func string(_ column: String) throws(StoredRowError) -> String {
        guard let text = try optionalString(column) else { throw .null(column, read: read) }
        return text
    }

    func optionalInt(_ column: String) throws(StoredRowError) -> Int? {
        let cell = try cell(column)
        guard !cell.isNull else { return nil }
        guard Self.isInteger(cell.typeOID), let value = cell.int else { throw .mistyped(cell, expected: "an integer", read: read) }
        return value
    }

    func int(_ column: String) throws(StoredRowError) -> Int {
        guard let value = try optionalInt(column) else { throw .null(column, read: read) }
        return value
    }

    func int64(_ column: String) throws(StoredRowError) -> Int64 {
        Int64(try int(column))
    }

    func bool(_ column: String) throws(StoredRowError) -> Bool {
        let cell = try cell(column)
        guard !cell.isNull else { throw .null(column, read: read) }
        guard cell.typeOID == Self.boolOID, let value = cell.bool else { throw .mistyped(cell, expected: "a boolean", read: read) }
        return value
    }

    func double(_ column: String) throws(StoredRowError) -> Double {
        let cell = try cell(column)
        guard !cell.isNull else { throw .null(column, read: read) }
        guard cell.typeOID == Self.float8OID, let value = cell.double else { throw .mistyped(cell, expected: "float8", read: read) }
        return value
    }

    /// A text column holding one of `T`'s raw values; any other text is a mistyped column.
    func value<T: RawRepresentable & CaseIterable>(_ column: String, as type: T.Type) throws(StoredRowError) -> T where T.RawValue == String {
        guard let value = try optionalValue(column, as: type) else { throw .null(column, read: read) }
        return value
    }

    /// ``value(_:as:)`` that allows NULL.
    func optionalValue<T: RawRepresentable & CaseIterable>(_ column: String, as type: T.Type) throws(StoredRowError) -> T?
    where T.RawValue == String {
        guard let text = try optionalString(column) else { return nil }
        guard let value = T(rawValue: text) else {
            throw .mistyped(try cell(column), expected: "one of " + T.allCases.map { "\($0.rawValue)" }.joined(separator: ", "), read: read)
        }
        return value
    }

    /// A `text[]` column; nil for SQL NULL.
    func optionalTextArray(_ column: String) throws(StoredRowError) -> [String]? {
        let cell = try cell(column)
        guard !cell.isNull else { return nil }
        guard cell.typeOID == Self.textArrayOID, let value = cell.strings else { throw .mistyped(cell, expected: "text[]", read: read) }
        return value
    }

    func bytes(_ column: String) throws(StoredRowError) -> [UInt8] {
        let cell = try cell(column)
        guard !cell.isNull else { throw .null(column, read: read) }
        guard cell.typeOID == Self.byteaOID, let bytes = cell.bytes else { throw .mistyped(cell, expected: "bytea", read: read) }
        return bytes
    }
}

extension PostgresRows {
    /// Every row decoded strictly by `decode`.
    func strict<T>(_ read: String, _ decode: (StrictRow) throws(StoredRowError) -> T) throws(StoredRowError) -> [T] {
        var decoded: [T] = []
        decoded.reserveCapacity(count)
        for row in self {
            decoded.append(try decode(StrictRow(row, read: read)))
        }
        return decoded
    }
}
