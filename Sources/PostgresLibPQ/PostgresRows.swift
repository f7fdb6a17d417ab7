/// The rows and command outcome of one statement, copied out of libpq's `PGresult` (which is freed at once).
///
/// Values are kept in PostgreSQL's text format and decoded on access through ``PostgresCell``.
public struct PostgresRows: Sendable, RandomAccessCollection {
    /// Column names, in result order.
    public var columns: [String]
    /// Rows inserted, updated, deleted, selected… as reported by the command tag (`PQcmdTuples`); 0 when the
    /// command reports none.
    public var affectedRows: Int
    /// The command tag, for example `INSERT 0 1` or `SELECT 3`.
    public var commandTag: String

    private let layout: ColumnLayout
    /// Row-major: the value of row `r`, column `c` is at `r * columns.count + c`; `nil` is SQL NULL.
    private let values: [String?]
    private let rowCount: Int

    init(columns: [String], typeOIDs: [UInt32], values: [String?], rowCount: Int, affectedRows: Int, commandTag: String) {
        self.columns = columns
        self.layout = ColumnLayout(names: columns, typeOIDs: typeOIDs)
        self.values = values
        self.rowCount = rowCount
        self.affectedRows = affectedRows
        self.commandTag = commandTag
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { self.rowCount }

    public subscript(position: Int) -> PostgresRow {
        precondition(position >= 0 && position < self.rowCount, "row index \(position) out of range 0..<\(self.rowCount)")
        let width = self.layout.names.count
        return PostgresRow(layout: self.layout, values: self.values[(position * width)..<((position + 1) * width)])
    }
}

/// Column names, types and a name → index table, shared (copy-on-write) by every row of a result.
struct ColumnLayout: Sendable {
    let names: [String]
    let typeOIDs: [UInt32]
    let indexByName: [String: Int]

    init(names: [String], typeOIDs: [UInt32]) {
        self.names = names
        self.typeOIDs = typeOIDs
        var indexByName: [String: Int] = [:]
        // With duplicate names (`SELECT a.id, b.id`) the first column wins, as in postgres-nio.
        for (index, name) in names.enumerated() where indexByName[name] == nil {
            indexByName[name] = index
        }
        self.indexByName = indexByName
    }
}

/// One row of a ``PostgresRows``.
public struct PostgresRow: Sendable {
    private let layout: ColumnLayout
    private let values: ArraySlice<String?>

    init(layout: ColumnLayout, values: ArraySlice<String?>) {
        self.layout = layout
        self.values = values
    }

    /// Column names, in result order.
    public var columns: [String] { self.layout.names }

    /// Whether the row has a column with this name.
    public func contains(_ column: String) -> Bool {
        self.layout.indexByName[column] != nil
    }

    /// The cell in the column with this name, or `nil` when the row has none: one lookup of the name, where
    /// ``contains(_:)`` and then the subscript take two.
    public func cell(named column: String) -> PostgresCell? {
        self.layout.indexByName[column].map { self[$0] }
    }

    /// The cell in the column with this name.
    ///
    /// A misspelt column name is a programming error, like an array index out of range: it stops the
    /// program (use ``contains(_:)`` first when the column is optional).
    public subscript(column: String) -> PostgresCell {
        guard let index = self.layout.indexByName[column] else {
            preconditionFailure("no column named \(String(reflecting: column)) in \(self.layout.names)")
        }
        return self[index]
    }

    /// The cell at this column index (0-based).
    public subscript(index: Int) -> PostgresCell {
        precondition(index >= 0 && index < self.layout.names.count, "column index \(index) out of range")
        return PostgresCell(
            columnName: self.layout.names[index],
            typeOID: self.layout.typeOIDs[index],
            text: self.values[self.values.startIndex + index]
        )
    }
}

/// One value of a row, in PostgreSQL's text format, with typed views that return `nil` for NULL or when the
/// text does not parse as the asked type.
public struct PostgresCell: Sendable, Hashable {
    /// The column's name.
    public var columnName: String
    /// The column's type OID (`PQftype`), for example 25 for `text`, 17 for `bytea`.
    public var typeOID: UInt32
    /// The value's text form; `nil` for SQL NULL.
    private var text: String?

    init(columnName: String, typeOID: UInt32, text: String?) {
        self.columnName = columnName
        self.typeOID = typeOID
        self.text = text
    }

    /// `true` for SQL NULL.
    public var isNull: Bool { self.text == nil }

    /// The value's text form (for a `bytea` column, the `\x…` hex text).
    public var string: String? { self.text }

    /// The value as an integer (`int2`, `int4`, `int8`, or any text that is a decimal integer).
    public var int: Int? { self.text.flatMap { Int($0) } }

    /// The value as a boolean: PostgreSQL's `t` / `f` (and `true` / `false`).
    public var bool: Bool? {
        switch self.text {
        case "t", "true": return true
        case "f", "false": return false
        default: return nil
        }
    }

    /// The value as a `Double` (`float4`, `float8`, `numeric`, integers), including `Infinity` and `NaN`.
    public var double: Double? {
        switch self.text {
        case nil: return nil
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        case "NaN": return .nan
        case let text?: return Double(text)
        }
    }

    /// For a `bytea` column, the decoded bytes (hex `\x…` or the older escape format); for other columns,
    /// the UTF-8 bytes of the text form.
    public var bytes: [UInt8]? {
        guard let text = self.text else { return nil }
        guard self.typeOID == PostgresValue.byteaOID else { return Array(text.utf8) }
        return ByteaText.decode(text)
    }

    /// For a one-dimensional array column (for example `text[]`), its elements as text; `nil` for NULL, for
    /// anything that is not a one-dimensional array literal, or when an element is NULL.
    public var strings: [String]? {
        guard let text = self.text, let elements = ArrayLiteral.parse(text) else { return nil }
        var strings: [String] = []
        strings.reserveCapacity(elements.count)
        for element in elements {
            guard let element else { return nil }
            strings.append(element)
        }
        return strings
    }
}

/// Decoding of `bytea` output: hex (`\x0a1b`, the default since 9.0) or escape (`a\000\\b`).
enum ByteaText {
    static func decode(_ text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        if utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x") {
            return Self.decodeHex(utf8[2...])
        }
        return Self.decodeEscape(utf8)
    }

    private static func decodeHex(_ digits: ArraySlice<UInt8>) -> [UInt8]? {
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = digits.startIndex
        while index < digits.endIndex {
            guard let high = Self.hexValue(digits[index]), let low = Self.hexValue(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func decodeEscape(_ text: [UInt8]) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        var index = 0
        while index < text.count {
            let byte = text[index]
            guard byte == UInt8(ascii: "\\") else {
                bytes.append(byte)
                index += 1
                continue
            }
            if index + 1 < text.count, text[index + 1] == UInt8(ascii: "\\") {
                bytes.append(byte)
                index += 2
                continue
            }
            guard index + 3 < text.count else { return nil }
            var value = 0
            for digit in text[(index + 1)...(index + 3)] {
                guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "7") else { return nil }
                value = value * 8 + Int(digit - UInt8(ascii: "0"))
            }
            guard value <= 255 else { return nil }
            bytes.append(UInt8(value))
            index += 4
        }
        return bytes
    }
}

/// Parsing of one-dimensional array output such as `{abc,"a b","q\"x",NULL,""}`.
enum ArrayLiteral {
    /// The elements, `nil` for an unquoted `NULL`; `nil` overall when the text is not a 1-D array literal
    /// (multi-dimensional arrays and explicit bounds such as `[0:1]={…}` are not supported).
    static func parse(_ text: String) -> [String?]? {
        let scalars = Array(text.unicodeScalars)
        guard scalars.first == "{", scalars.last == "}" else { return nil }
        var elements: [String?] = []
        var index = 1
        let end = scalars.count - 1
        if index == end { return [] }
        while true {
            guard index < end else { return nil }
            var element = String.UnicodeScalarView()
            var quoted = false
            if scalars[index] == "\"" {
                quoted = true
                index += 1
                while true {
                    guard index < end else { return nil }
                    let scalar = scalars[index]
                    if scalar == "\"" { index += 1; break }
                    if scalar == "\\" {
                        index += 1
                        guard index < end else { return nil }
                    }
                    element.append(scalars[index])
                    index += 1
                }
            } else {
                while index < end, scalars[index] != ",", scalars[index] != "}" {
                    if scalars[index] == "{" || scalars[index] == "\"" { return nil }
                    if scalars[index] == "\\" {
                        index += 1
                        guard index < end else { return nil }
                    }
                    element.append(scalars[index])
                    index += 1
                }
            }
            let value = String(element)
            elements.append(!quoted && value.uppercased() == "NULL" ? nil : value)
            if index == end { return elements }
            guard scalars[index] == "," else { return nil }
            index += 1
        }
    }
}
