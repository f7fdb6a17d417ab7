import CIModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// A swift-log handler that writes one JSON object per line to standard error, for log shippers:
/// `{"time":"…","level":"info","label":"…","message":"request","source":"…","http.status":"200",…}`.
///
/// Metadata keys become top-level fields; the fixed fields win on a clash.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let write: @Sendable ([UInt8]) -> Void

    /// One lock for every handler: lines from different threads must not interleave.
    private static let output = Mutex(())

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.init(label: label, metadataProvider: metadataProvider) { line in
            JSONLogHandler.output.withLock { _ in
                // One write(2) per line: whole lines even when several processes share the stream.
                line.withUnsafeBytes { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
            }
        }
    }

    /// For tests: `write` receives each line, newline included.
    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, write: @escaping @Sendable ([UInt8]) -> Void) {
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
        json.member("time", Date.now.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)))
        json.member("level", event.level.rawValue)
        json.member("label", label)
        json.member("message", event.message.description)
        json.member("source", event.source)
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !["time", "level", "label", "message", "source"].contains(key) {
            json.key(key)
            Self.append(value, to: &json)
        }
        json.endObject()
        write(json.bytes + [0x0A])
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
