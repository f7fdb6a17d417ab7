/// An ordered list of HTTP header fields.
///
/// Fields keep the order and the name spelling they were received or added with; lookups compare names
/// ASCII-case-insensitively, as RFC 9110 §5.1 requires. Equality and hashing compare the exact ordered
/// list, which is what tests of parser and encoder output want.
public struct HTTPHeaders: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    /// One header field as stored.
    @usableFromInline
    struct Field: Sendable, Hashable {
        @usableFromInline var name: String
        @usableFromInline var value: String
    }

    @usableFromInline
    var fields: [Field]

    /// Creates an empty header list.
    public init() {
        fields = []
    }

    /// Creates a header list from ordered pairs.
    /// - Parameter pairs: Fields in order; repeated names are kept as separate fields.
    public init(_ pairs: [(name: String, value: String)]) {
        fields = pairs.map { Field(name: $0.name, value: $0.value) }
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { Field(name: $0.0, value: $0.1) }
    }

    /// The number of fields, counting repeated names separately.
    public var count: Int { fields.count }

    /// Whether there are no fields.
    public var isEmpty: Bool { fields.isEmpty }

    /// The value of the first field named `name`, or `nil` when there is none.
    public subscript(name: String) -> String? {
        fields.first { $0.name.equalsASCIICaseInsensitive(name) }?.value
    }

    /// The values of every field named `name`, in order.
    public func values(for name: String) -> [String] {
        fields.compactMap { $0.name.equalsASCIICaseInsensitive(name) ? $0.value : nil }
    }

    /// Whether at least one field is named `name`.
    public func contains(name: String) -> Bool {
        fields.contains { $0.name.equalsASCIICaseInsensitive(name) }
    }

    /// Appends a field, keeping any existing fields with the same name.
    public mutating func add(name: String, value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Replaces the first field named `name` and removes the others, or appends the field when absent.
    public mutating func replaceOrAdd(name: String, value: String) {
        guard let first = fields.firstIndex(where: { $0.name.equalsASCIICaseInsensitive(name) }) else {
            fields.append(Field(name: name, value: value))
            return
        }
        fields[first].value = value
        var index = fields.index(after: first)
        while index < fields.endIndex {
            if fields[index].name.equalsASCIICaseInsensitive(name) {
                fields.remove(at: index)
            } else {
                index += 1
            }
        }
    }

    /// Removes every field named `name`.
    public mutating func remove(name: String) {
        fields.removeAll { $0.name.equalsASCIICaseInsensitive(name) }
    }

    /// Iterates the fields in order.
    public struct Iterator: IteratorProtocol, Sendable {
        @usableFromInline var base: IndexingIterator<[Field]>

        @inlinable
        public mutating func next() -> (name: String, value: String)? {
            base.next().map { (name: $0.name, value: $0.value) }
        }
    }

    public func makeIterator() -> Iterator {
        Iterator(base: fields.makeIterator())
    }
}

extension HTTPHeaders: CustomStringConvertible {
    /// Field names only: header values may carry credentials (Authorization, cookies), so they stay out of logs.
    public var description: String {
        "HTTPHeaders(\(fields.map(\.name).joined(separator: ", ")))"
    }
}

extension StringProtocol {
    /// ASCII case-insensitive comparison, the rule for header names and tokens such as `chunked`.
    func equalsASCIICaseInsensitive(_ other: some StringProtocol) -> Bool {
        let lhs = utf8
        let rhs = other.utf8
        guard lhs.count == rhs.count else { return false }
        for (a, b) in zip(lhs, rhs) where a != b {
            guard a.asciiLowercased == b.asciiLowercased else { return false }
        }
        return true
    }
}

extension UInt8 {
    var asciiLowercased: UInt8 {
        (0x41...0x5A).contains(self) ? self | 0x20 : self
    }
}
