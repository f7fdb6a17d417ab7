import CIModel
import Logging

/// A swift-log handler that writes one JSON object per line to standard error (through ``LogOutput``), for
/// log shippers: `{"time":"…","level":"info","label":"…","message":"request","source":"…","http.status":"200",…}`.
///
/// Metadata keys become top-level fields; the fixed fields win on a clash.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let write: @Sendable (_ line: [UInt8], _ level: Logger.Level) -> Void

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, output: LogOutput = .standardError) {
        self.init(label: label, metadataProvider: metadataProvider) { line, level in
            output.write(line, urgent: level >= .warning)
        }
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
        var json = JSONWriter(reservingCapacity: 256)
        json.beginObject()
        json.member("time", LogTimestamp.now())
        json.member("level", event.level.rawValue)
        json.member("label", label)
        json.member("message", event.message.description)
        json.member("source", event.source)
        for (key, value) in LogMetadata.sortedFields(handler: metadata, provider: metadataProvider, event: event.metadata)
        where !Self.fixedFields.contains(key) {
            json.key(key)
            Self.append(value, to: &json)
        }
        json.endObject()
        var line = json.bytes
        line.append(0x0A)
        write(line, event.level)
    }

    private static let fixedFields: Set<String> = ["time", "level", "label", "message", "source"]

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
}
