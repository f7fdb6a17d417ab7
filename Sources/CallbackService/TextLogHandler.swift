import Logging

/// The default (`LOG_FORMAT=text`) log handler: swift-log's `StreamLogHandler` layout,
/// `<time> <level> <label> : <key=value …> [<source>] <message>`, written through ``LogOutput``.
///
/// Differs from `StreamLogHandler` in two ways that matter at one line per request: the time is UTC
/// (RFC 3339 with milliseconds, no local-time lookup), and lines are written in batches rather than one
/// `write(2)` each.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    private let label: String
    private let output: LogOutput

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, output: LogOutput = .standardError) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = LogTimestamp.now()
        line += " "
        line += event.level.rawValue
        line += " "
        line += label
        line += " :"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " "
            line += key
            line += "="
            line += value.description
        }
        line += " ["
        line += event.source
        line += "] "
        line += event.message.description
        line += "\n"
        output.write(Array(line.utf8), urgent: event.level >= .warning)
    }
}
