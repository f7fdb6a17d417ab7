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
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }

        var json = JSONWriter(reservingCapacity: 256)
        json.beginObject()
        json.member("time", LogTimestamp.now())
        json.member("level", event.level.rawValue)
        json.member("label", label)
        json.member("message", event.message.description)
        json.member("source", event.source)
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !["time", "level", "label", "message", "source"].contains(key) {
            json.key(key)
            Self.append(value, to: &json)
        }
        json.endObject()
        write(json.bytes + [0x0A], event.level)
    }

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
