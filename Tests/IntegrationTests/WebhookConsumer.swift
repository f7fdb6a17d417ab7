import Foundation
import Testing

/// A real webhook consumer: `scripts/webhook_consumer.py` in a venv with PyPI's `standardwebhooks`
/// (made by `scripts/webhook-consumer-venv`), verifying every delivery as a consumer would.
final class WebhookConsumer: @unchecked Sendable {
    // @unchecked: `process` is replaced only by `start`/`kill`, which the owning test calls in sequence.
    let directory: URL
    private(set) var port: Int = 0
    private var process: Process?

    /// One request as the consumer logged it.
    struct Delivery: Sendable, Hashable {
        var path: String
        var id: String
        var timestamp: Int
        var verified: Bool
        var job: String?
        var state: String?
        /// The status answered, or "hung".
        var status: String
        var body: String
    }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("webhook-consumer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: directory.appendingPathComponent("secrets.json"))
    }

    /// The venv's python, made once per test process.
    static let python: Result<String, any Error> = Result {
        let script = repositoryRoot.appendingPathComponent("scripts/webhook-consumer-venv")
        let process = Process()
        process.executableURL = script
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ConsumerError("scripts/webhook-consumer-venv failed (\(process.terminationStatus))") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct ConsumerError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Starts the consumer (on `port`, or a free one the first time) and waits until it listens.
    func start(port requested: Int? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.python.get())
        process.arguments = [
            repositoryRoot.appendingPathComponent("scripts/webhook_consumer.py").path, "--dir", directory.path, "--port", "\(requested ?? 0)",
        ]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        self.process = process
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw ConsumerError("the consumer exited before listening") }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("listening "), let port = Int(text.dropFirst("listening ".count)) else { throw ConsumerError("unexpected: \(text)") }
        self.port = port
    }

    /// kill -9.
    func kill() {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    /// Tells the consumer the secret that signs deliveries to `path`.
    func setSecret(_ secret: String, for path: String) throws {
        let file = directory.appendingPathComponent("secrets.json")
        var secrets = (try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: String]) ?? [:]
        secrets[path] = secret
        try JSONSerialization.data(withJSONObject: secrets).write(to: file, options: .atomic)
    }

    /// Everything received so far, in arrival order.
    func deliveries(path: String? = nil) -> [Delivery] {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("deliveries.jsonl").path) else { return [] }
        return data.split(separator: UInt8(ascii: "\n")).compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { return nil }
            let status = (object["status"] as? Int).map(String.init) ?? (object["status"] as? String ?? "?")
            return Delivery(
                path: object["path"] as? String ?? "", id: object["id"] as? String ?? "", timestamp: Int(object["timestamp"] as? String ?? "") ?? 0,
                verified: object["verified"] as? Bool ?? false, job: object["job"] as? String, state: object["state"] as? String, status: status,
                body: object["body"] as? String ?? "")
        }.filter { path == nil || $0.path == path }
    }

    func stop() {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }
}
