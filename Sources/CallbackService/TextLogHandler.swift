import Logging

/// The default (`LOG_FORMAT=text`) log handler: swift-log's `StreamLogHandler` layout,
/// `<time> <level> <label> : <key=value …> [<source>] <message>`, written through ``LogOutput``.
///
/// Differs from `StreamLogHandler` where it matters at one line per request: the time is UTC (RFC 3339
/// with milliseconds, no local-time lookup), the line is built as bytes without merging metadata
/// dictionaries, and lines are written in batches rather than one `write(2)` each.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let write: @Sendable (_ line: [UInt8], _ level: Logger.Level) -> Void

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, output: LogOutput = .standardError) {
        self.init(label: label, metadataProvider: metadataProvider) { line, level in output.write(line, urgent: level >= .warning) }
    }

    /// For tests: `write` receives each line, newline included.
    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, write: @escaping @Sendable ([UInt8]) -> Void) {
        self.init(label: label, metadataProvider: metadataProvider) { line, _ in write(line) }
    }

    private init(label: String, metadataProvider: Logger.MetadataProvider?, write: @escaping @Sendable (_ line: [UInt8], _ level: Logger.Level) -> Void) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line: [UInt8] = []
        line.reserveCapacity(256)
        line.append(contentsOf: LogTimestamp.now().utf8)
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: event.level.rawValue.utf8)
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: label.utf8)
        line.append(contentsOf: " :".utf8)
        for (key, value) in LogMetadata.sortedFields(handler: metadata, provider: metadataProvider, event: event.metadata) {
            line.append(UInt8(ascii: " "))
            line.append(contentsOf: key.utf8)
            line.append(UInt8(ascii: "="))
            line.append(contentsOf: value.description.utf8)
        }
        line.append(contentsOf: " [".utf8)
        line.append(contentsOf: event.source.utf8)
        line.append(contentsOf: "] ".utf8)
        line.append(contentsOf: event.message.description.utf8)
        line.append(0x0A)
        write(line, event.level)
    }
}

/// The metadata fields of one log event, for both of the service's handlers.
enum LogMetadata {
    /// The handler's, the provider's and the event's metadata (later ones win on a key), sorted by key.
    /// Collected into an array rather than merged into a new dictionary: the request log line has seven
    /// fields, and rehashing them was most of a line's cost.
    static func sortedFields(
        handler: Logger.Metadata, provider: Logger.MetadataProvider?, event: Logger.Metadata?
    ) -> [(key: String, value: Logger.Metadata.Value)] {
        let provided = provider?.get() ?? [:]
        let event = event ?? [:]
        var fields: [(key: String, value: Logger.Metadata.Value)] = []
        fields.reserveCapacity(handler.count + provided.count + event.count)
        for (key, value) in handler where provided[key] == nil && event[key] == nil {
            fields.append((key, value))
        }
        for (key, value) in provided where event[key] == nil {
            fields.append((key, value))
        }
        for (key, value) in event {
            fields.append((key, value))
        }
        fields.sort { $0.key < $1.key }
        return fields
    }
}
