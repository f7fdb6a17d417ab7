import CIClient
import CISimulator
import COSSigning
import Foundation
import HTTPListener
import HTTPWire
import Logging
import Synchronization
import Testing

/// Simulator tests assert on answers and counters, not on log lines.
private let simulatorTestLogger: Logger = {
    var logger = Logger(label: "ci-simulator-test")
    logger.logLevel = .critical
    return logger
}()

/// A ``CISimulator`` on an ephemeral loopback port, with fast job timelines, and clients for it.
final class CISimulatorTestHarness: Sendable {
    let simulator: CISimulator
    let port: Int
    let configuration: SimulatorConfiguration
    private let runTask: Task<Void, any Error>

    private init(simulator: CISimulator, port: Int, configuration: SimulatorConfiguration, runTask: Task<Void, any Error>) {
        self.simulator = simulator
        self.port = port
        self.configuration = configuration
        self.runTask = runTask
    }

    var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// Runs `body` against a fresh simulator (jobs finish ~70 ms after submission unless `configure` says
    /// otherwise), stopping it afterwards whatever happens.
    static func with<T>(
        _ configure: (inout SimulatorConfiguration) -> Void = { _ in },
        _ body: (CISimulatorTestHarness) async throws -> T
    ) async throws -> T {
        var configuration = SimulatorConfiguration()
        configuration.secretID = "AKIDsimulatortest"
        configuration.secretKey = "simulator-test-secret-key"
        configuration.runningAfter = .milliseconds(20)
        configuration.jobDuration = .milliseconds(50)
        configuration.deliveryBackoff = .milliseconds(20)
        configuration.deliveryTimeout = .seconds(2)
        configuration.seed = 1
        configure(&configuration)
        let simulator = CISimulator(configuration: configuration, logger: simulatorTestLogger)
        let runTask = Task { try await simulator.run() }
        let harness: CISimulatorTestHarness
        do {
            let port = try await simulator.waitUntilListening()
            harness = CISimulatorTestHarness(simulator: simulator, port: port, configuration: configuration, runTask: runTask)
        } catch {
            runTask.cancel()
            throw error
        }
        do {
            let result = try await body(harness)
            await harness.stop()
            return result
        } catch {
            await harness.stop()
            throw error
        }
    }

    func stop() async {
        runTask.cancel()
        _ = try? await runTask.value
    }

    /// The simulator's counters once `condition` holds for them, or after `timeout` whatever they are: a
    /// receiver sees a callback before the simulator has read the answer and counted it.
    func statistics(
        within timeout: Duration = .seconds(5),
        where condition: (SimulatorStatistics) -> Bool
    ) async throws -> SimulatorStatistics {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let current = simulator.statistics
            if condition(current) { return current }
            try await Task.sleep(for: .milliseconds(10))
        }
        return simulator.statistics
    }

    /// A client for this simulator; `secretKey` overrides the right one, `configure` adjusts the rest.
    func client(secretKey: String? = nil, _ configure: (inout CIConfiguration) -> Void = { _ in }) -> CIClient {
        var configuration = CIConfiguration(
            credentials: COSCredentials(secretID: self.configuration.secretID, secretKey: secretKey ?? self.configuration.secretKey),
            bucket: "examplebucket-1250000000",
            region: "ap-chongqing",
            endpoint: endpoint
        )
        configuration.baseBackoff = .milliseconds(10)
        configuration.maxBackoff = .milliseconds(50)
        configuration.requestTimeout = .seconds(5)
        configure(&configuration)
        return CIClient(configuration: configuration, logger: simulatorTestLogger)
    }
}

/// An HTTP receiver for simulator callbacks on our own listener: records every request and can answer
/// the first few with 500.
final class CISimulatorCallbackReceiver: Sendable {
    struct Received: Sendable {
        var body: [UInt8]
        var contentType: String?
        var accepted: Bool
    }

    private struct State {
        var received: [Received] = []
        var failuresLeft: Int
    }

    private let shared: SharedState
    private let server: HTTPServer
    private let runTask: Task<Void, any Error>
    let url: String

    private init(shared: SharedState, server: HTTPServer, runTask: Task<Void, any Error>, url: String) {
        self.shared = shared
        self.server = server
        self.runTask = runTask
        self.url = url
    }

    /// Runs `body` with a receiver whose first `failFirst` requests get 500, stopping it afterwards.
    static func with<T>(failFirst: Int = 0, _ body: (CISimulatorCallbackReceiver) async throws -> T) async throws -> T {
        let receiver = try await start(failFirst: failFirst)
        do {
            let result = try await body(receiver)
            await receiver.stop()
            return result
        } catch {
            await receiver.stop()
            throw error
        }
    }

    private static func start(failFirst: Int) async throws -> CISimulatorCallbackReceiver {
        // The responder captures the state before the receiver object exists.
        let box = SharedState(failuresLeft: failFirst)
        var configuration = HTTPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.eventLoopCount = 1
        let server = HTTPServer(configuration: configuration, logger: simulatorTestLogger) { request in
            let accepted = box.record(request)
            return HTTPResponse(status: accepted ? .ok : .internalServerError, body: Array("{}".utf8))
        }
        let runTask = Task { try await server.run() }
        let port = try await server.waitUntilListening()
        return CISimulatorCallbackReceiver(shared: box, server: server, runTask: runTask, url: "http://127.0.0.1:\(port)/v1/callbacks")
    }

    private final class SharedState: Sendable {
        let state: Mutex<State>
        init(failuresLeft: Int) { state = Mutex(State(failuresLeft: failuresLeft)) }
        func record(_ request: HTTPRequest) -> Bool {
            state.withLock { state in
                let accepted = state.failuresLeft <= 0
                if !accepted { state.failuresLeft -= 1 }
                state.received.append(Received(body: request.body, contentType: request.headers["Content-Type"], accepted: accepted))
                return accepted
            }
        }
    }

    func stop() async {
        runTask.cancel()
        _ = try? await runTask.value
    }

    var received: [Received] { shared.state.withLock { $0.received } }

    /// Waits until at least `count` requests arrived, or `timeout` passed; returns what arrived.
    func waitForRequests(_ count: Int, timeout: Duration = .seconds(5)) async throws -> [Received] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let current = received
            if current.count >= count { return current }
            try await Task.sleep(for: .milliseconds(10))
        }
        return received
    }
}
