/// An ordered element tree that both callback formats decode into.
///
/// CI's JSON is a mechanical transliteration of its XML, so one tree shape serves both:
/// an element is an ordered list of named fields whose names may repeat (XML repeated
/// siblings, or the items of a JSON array under one key), and a leaf is text.
///
/// - An empty XML element (`<X/>`, `<X></X>`) is `.text("")`.
/// - A JSON `{}` is `.element([])`; ``text`` reads it as `""` too, because XML cannot tell an
///   empty container from an empty leaf.
/// - A JSON `null` is an absent field.
public indirect enum CINode: Sendable, Hashable {
    /// A leaf: character data with entities and escapes already resolved.
    case text(String)
    /// A container: named children in document order; names may repeat.
    case element([CIField])
}

/// One named child of a ``CINode/element(_:)``.
public struct CIField: Sendable, Hashable {
    /// The element name (XML) or object key (JSON), exactly as received.
    public var name: String
    /// The child's value.
    public var value: CINode

    /// Creates a field.
    public init(name: String, value: CINode) {
        self.name = name
        self.value = value
    }
}

extension CINode {
    /// The leaf text; `""` for an element without children; `nil` for a container with children.
    public var text: String? {
        switch self {
        case .text(let string): return string
        case .element(let fields): return fields.isEmpty ? "" : nil
        }
    }

    /// The children of a container, in document order; empty for a leaf.
    public var fields: [CIField] {
        switch self {
        case .text: return []
        case .element(let fields): return fields
        }
    }

    /// The first child named `name`, or `nil` when there is none (or `self` is a leaf).
    public subscript(_ name: String) -> CINode? {
        guard case .element(let fields) = self else { return nil }
        for field in fields where field.name == name {
            return field.value
        }
        return nil
    }

    /// Follows `path` through first children: `node[path: "Operation", "UserData"]`.
    /// An empty path returns `self`.
    public subscript(path path: String...) -> CINode? {
        self.node(atPath: path)
    }

    /// Follows `path` through first children; an empty path returns `self`.
    public func node(atPath path: some Sequence<String>) -> CINode? {
        var current = self
        for name in path {
            guard let next = current[name] else { return nil }
            current = next
        }
        return current
    }

    /// Every child named `name`, in document order (XML repeated siblings, JSON array items).
    public func all(_ name: String) -> [CINode] {
        guard case .element(let fields) = self else { return [] }
        var result: [CINode] = []
        for field in fields where field.name == name {
            result.append(field.value)
        }
        return result
    }
}
