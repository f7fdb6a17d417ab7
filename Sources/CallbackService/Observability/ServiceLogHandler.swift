import CIModel
import Logging

/// The service's swift-log handler: one line per event on standard error, written through ``LogOutput``,
/// as text (the default) or JSON (`LOG_FORMAT=json`).
///
/// - ``Format/text``: swift-log's `StreamLogHandler` layout,
///   `<time> <level> <label> : <key=value …> [<source>] <message>`.
/// - ``Format/json``: one object per line for log shippers,
///   `{"time":"…","level":"info","label":"…","message":"request","source":"…","http.status":"200",…}`;
///   metadata keys become top-level fields, and the fixed fields win on a clash.
///
/// Built for one line per request: the time is UTC (RFC 3339 with milliseconds, no local-time lookup),
/// the line is built as bytes without merging metadata dictionaries, and lines are written in batches.
public struct ServiceLogHandler: LogHandler {
    /// How each line is written.
    public enum Format: Sendable {
        case text
        case json
    }

    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let format: Format
    private let write: @Sendable (_ line: [UInt8], _ level: Logger.Level) -> Void

    public init(label: String, format: Format, metadataProvider: Logger.MetadataProvider? = nil, output: LogOutput = .standardError) {
        self.init(label: label, format: format, metadataProvider: metadataProvider) { line, level in
            output.write(line, urgent: level >= .warning)
        }
    }

    /// For tests: `write` receives each line, newline included.
    public init(label: String, format: Format, metadataProvider: Logger.MetadataProvider? = nil, write: @escaping @Sendable ([UInt8]) -> Void) {
        self.init(label: label, format: format, metadataProvider: metadataProvider) { line, _ in write(line) }
    }

    private init(
        label: String, format: Format, metadataProvider: Logger.MetadataProvider?,
        write: @escaping @Sendable (_ line: [UInt8], _ level: Logger.Level) -> Void
    ) {
        self.label = label
        self.format = format
        self.metadataProvider = metadataProvider
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let fields = Self.sortedFields(handler: metadata, provider: metadataProvider, event: event.metadata)
        var line =
            switch format {
            case .text: textLine(event, fields: fields)
            case .json: jsonLine(event, fields: fields)
            }
        line.append(0x0A)
        write(line, event.level)
    }

    private func textLine(_ event: LogEvent, fields: [(key: String, value: Logger.Metadata.Value)]) -> [UInt8] {
        var line: [UInt8] = []
        line.reserveCapacity(256)
        line.append(contentsOf: LogTimestamp.now().utf8)
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: event.level.rawValue.utf8)
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: label.utf8)
        line.append(contentsOf: " :".utf8)
        for (key, value) in fields {
            line.append(UInt8(ascii: " "))
            line.append(contentsOf: key.utf8)
            line.append(UInt8(ascii: "="))
            line.append(contentsOf: value.description.utf8)
        }
        line.append(contentsOf: " [".utf8)
        line.append(contentsOf: event.source.utf8)
        line.append(contentsOf: "] ".utf8)
        line.append(contentsOf: event.message.description.utf8)
        return line
    }

    private func jsonLine(_ event: LogEvent, fields: [(key: String, value: Logger.Metadata.Value)]) -> [UInt8] {
        var json = JSONWriter(reservingCapacity: 256)
        json.beginObject()
        json.member("time", LogTimestamp.now())
        json.member("level", event.level.rawValue)
        json.member("label", label)
        json.member("message", event.message.description)
        json.member("source", event.source)
        for (key, value) in fields where !Self.fixedJSONFields.contains(key) {
            json.key(key)
            Self.append(value, to: &json)
        }
        json.endObject()
        return json.bytes
    }

    private static let fixedJSONFields: Set<String> = ["time", "level", "label", "message", "source"]

    private static func append(_ value: Logger.Metadata.Value, to json: inout JSONWriter) {
        switch value {
        case .string(let text): json.string(text)
        case .stringConvertible(let convertible): json.string(convertible.description)
        case .array(let values):
            json.beginArray()
            for element in values { append(element, to: &json) }
            json.endArray()
        case .dictionary(let dictionary):
            json.beginObject()
            for (key, element) in dictionary.sorted(by: { $0.key < $1.key }) {
                json.key(key)
                append(element, to: &json)
            }
            json.endObject()
        }
    }

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
