import Foundation
import TestSupport
import Testing

/// A real webhook consumer: `scripts/webhook_consumer.py` in a venv with PyPI's `standardwebhooks`
/// (made by `scripts/webhook-consumer-venv`), verifying every delivery as a consumer would.
final class WebhookConsumer: @unchecked Sendable {
    // @unchecked: `child` and `port` are replaced only by `start`/`kill`, which the owning test calls in sequence.
    let directory: URL
    private(set) var port: Int = 0
    private var child: ChildProcess?

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

    /// Makes the venv (scripts/webhook-consumer-venv) once per test process. An actor, so concurrent first
    /// callers share one run of the script; the script runs as a child waited for off the cooperative
    /// pool, so a pip install (on a fresh clone, when scripts/test has not made the venv already) holds
    /// no thread the other tests need.
    private actor Venv {
        private var python: Task<String, any Error>?

        func path() async throws -> String {
            if let python { return try await python.value }
            let made = Task {
                let output = try await ChildProcess.succeed(
                    repositoryRoot.appendingPathComponent("scripts/webhook-consumer-venv").path, within: .seconds(600))
                return output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            python = made
            return try await made.value
        }
    }

    private static let venv = Venv()

    struct ConsumerError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Starts the consumer (on `port`, or a free one the first time) and waits until it listens.
    func start(port requested: Int? = nil) async throws {
        let python = try await Self.venv.path()
        let output = directory.appendingPathComponent("consumer.out").path
        let script = repositoryRoot.appendingPathComponent("scripts/webhook_consumer.py").path
        let child = try ChildProcess(
            python, [script, "--dir", directory.path, "--port", "\(requested ?? 0)"], standardOutput: .file(output), standardError: .inherit)
        self.child = child
        var printed = ""
        let ended = try await eventually(within: .seconds(60)) {
            printed = String(decoding: FileManager.default.contents(atPath: output) ?? Data(), as: UTF8.self)
            return printed.contains("\n") || !child.isRunning
        }
        let line = printed.prefix { $0 != "\n" }
        guard line.hasPrefix("listening "), let port = Int(line.dropFirst("listening ".count)) else {
            child.kill()
            throw ConsumerError(ended ? "the consumer exited before listening, or printed: \(printed)" : "the consumer did not listen within 60 s")
        }
        self.port = port
    }

    /// kill -9, and wait until it has gone (so its port can be listened on again).
    func kill() async {
        guard let child else { return }
        child.kill()
        _ = try? await child.exit(within: .seconds(60))
        self.child = nil
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

    /// For a `defer`: kills it without waiting (its reaping thread collects it) and removes its files.
    func stop() {
        child?.kill()
        try? FileManager.default.removeItem(at: directory)
    }
}
