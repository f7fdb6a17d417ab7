import Foundation
import PostgresLibPQ
import TestSupport
import Testing

/// `ci-callbackd serve` processes sharing one database: a replica killed with SIGKILL mid-delivery, and two
/// replicas delivering together.
@Suite("Webhook replicas", .serialized)
struct WebhookReplicaTests {
    /// One `ci-callbackd serve` process.
    final class Replica: Sendable {
        let child: ChildProcess
        let port: Int
        let log: URL
        var base: String { "http://127.0.0.1:\(port)" }

        /// - Parameter settings: environment settings in place of, or besides, the defaults below.
        init(schema: String, settings: [String: String] = [:]) async throws {
            port = try freeLoopbackPort()
            log = FileManager.default.temporaryDirectory.appendingPathComponent("webhook-replica-\(UUID().uuidString).log")
            let defaults = [
                "DATABASE_URL": conninfo(testDatabaseURL, searchPath: schema), "WEBHOOK_TIMEOUT": "2s", "WEBHOOK_LEASE_MARGIN": "1s",
                "WEBHOOK_RETRY_SCHEDULE": "200ms,400ms,1s,2s,2s", "LOG_LEVEL": "warning",
            ]
            child = try ChildProcess(
                try builtServiceBinary().path, ["serve", "--host", "127.0.0.1", "--port", "\(port)"],
                environment: defaults.merging(settings) { $1 }, standardOutput: .file(log.path))
            // Generous: it waits its turn at the database's one migration lock behind the rest of the suite's
            // services (see ServiceProcess).
            let deadline = ContinuousClock.now + .seconds(240)
            while (try? await ServiceBinaryTests.fetch("GET", base + "/readyz"))?.status != 200 {
                try #require(child.isRunning, "ci-callbackd exited: \(String(decoding: (try? Data(contentsOf: log)) ?? Data(), as: UTF8.self))")
                try #require(ContinuousClock.now < deadline, "ci-callbackd not ready within 240 s")
                try await Task.sleep(for: .milliseconds(100))
            }
        }

        /// kill -9, and wait until it has gone.
        func kill9() async {
            child.kill()
            _ = try? await child.exit(within: .seconds(60))
        }

        /// For a `defer`: SIGTERM without waiting (its reaping thread collects it).
        func stop() {
            child.terminate()
            try? FileManager.default.removeItem(at: log)
        }

        func post(_ jobID: String, _ state: String) async throws {
            let reply = try await ServiceBinaryTests.fetch(
                "POST", base + "/v1/callbacks", body: Data(EventService.callback(jobID, state: state)), contentType: "application/json")
            #expect(reply.status == 200, "\(reply.text)")
        }

        func subscribe(_ consumer: WebhookConsumer, _ path: String) async throws -> String {
            let reply = try await ServiceBinaryTests.fetch(
                "POST", base + "/v1/subscriptions", body: Data(#"{"Url":"\#(consumer.url(path))"}"#.utf8), contentType: "application/json")
            #expect(reply.status == 201, "\(reply.text)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(reply.text.utf8)) as? [String: Any])
            try consumer.setSecret(try #require(json["Secret"] as? String), for: path)
            return try #require(json["SubscriptionId"] as? String)
        }
    }

    static func withSchema<T>(_ body: (String) async throws -> T) async throws -> T {
        let schema = "t_" + RequestIDForTests.random()
        let admin = try PostgresConnection.connect(testDatabaseURL)
        defer {
            _ = try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            admin.close()
        }
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")
        return try await body(schema)
    }

    /// kill -9 while the consumer holds the attempt open: another replica sends it again, with the same
    /// webhook-id, once the lease runs out; the cut attempt stays in the history without an outcome, and
    /// says so. While it is in flight the history shows it too, though its row is written only with its
    /// outcome (migration 0013).
    @Test(.timeLimit(.minutes(8)))
    func replicaKilledDuringDelivery_AnotherReplicaResendsTheSameID() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await Self.withSchema { schema in
            let first = try await Replica(schema: schema)
            defer { first.stop() }
            let subscription = try await first.subscribe(consumer, "/hang/kill")
            try await first.post(RequestIDForTests.jobID(), "Success")
            #expect(try await eventually(within: .seconds(60)) { consumer.deliveries(path: "/hang/kill").first?.status == "hung" })
            let inFlight = try await Self.onlyDelivery(first.base, subscription)
            let inFlightAttempts = try #require(inFlight["Attempts"] as? [[String: Any]])
            #expect(inFlightAttempts.map { $0["Attempt"] as? Int } == [1])
            #expect(inFlightAttempts.first?["Time"] is String)
            #expect(inFlightAttempts.first?["FinishedTime"] is NSNull)
            await first.kill9()

            let second = try await Replica(schema: schema)
            defer { second.stop() }
            #expect(try await eventually(within: .seconds(60)) { consumer.deliveries(path: "/hang/kill").count == 2 })
            let received = consumer.deliveries(path: "/hang/kill")
            #expect(received.map(\.status) == ["hung", "200"])
            #expect(received.allSatisfy { $0.verified })
            #expect(received[0].id == received[1].id)
            // The consumer logs the request before the service has read its answer and recorded it: wait for that.
            var delivery: [String: Any] = [:]
            #expect(
                try await eventually {
                    delivery = try await Self.onlyDelivery(second.base, subscription)
                    return delivery["Status"] as? String == "succeeded"
                })
            let attempts = try #require(delivery["Attempts"] as? [[String: Any]])
            #expect(attempts.map { $0["Attempt"] as? Int } == [1, 2])
            #expect(attempts.map { $0["StatusCode"] as? Int } == [nil, 200])
            #expect(attempts.first?["FinishedTime"] is NSNull)
            #expect(attempts.first?["Time"] as? String == inFlightAttempts.first?["Time"] as? String)
            #expect((attempts.first?["Error"] as? String)?.contains("the lease ran out") == true)
            #expect(attempts.last?["FinishedTime"] is String)
        }
    }

    /// The first delivery in a subscription's history, as the API lists it.
    static func onlyDelivery(_ base: String, _ subscription: String) async throws -> [String: Any] {
        try await deliveries(base, subscription).first ?? [:]
    }

    /// A subscription's delivery history's first page, as the API lists it.
    static func deliveries(_ base: String, _ subscription: String) async throws -> [[String: Any]] {
        let history = try await ServiceBinaryTests.fetch("GET", base + "/v1/subscriptions/\(subscription)/deliveries")
        let json = try JSONSerialization.jsonObject(with: Data(history.text.utf8)) as? [String: Any]
        return json?["Deliveries"] as? [[String: Any]] ?? []
    }

    /// A consumer that hangs, with two replicas: each attempt is sent by one replica, once. The consumer
    /// hangs on each event's first POST (answering the next), and with one slot for the subscription a
    /// replica's leased deliveries wait in its sender behind each other's 2 s timeouts, longer than their
    /// 3 s lease; the lease is renewed meanwhile, so the other replica neither takes them again (no attempt
    /// cut short as "the lease ran out") nor sends them a second time.
    @Test(.timeLimit(.minutes(8)))
    func twoReplicas_ConsumerHangs_EachAttemptIsSentOnceByOneReplica() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await Self.withSchema { schema in
            // No circuit breaker in the way: every timed-out delivery is retried, at once.
            let settings = ["WEBHOOK_SUBSCRIPTION_CONCURRENCY": "1", "WEBHOOK_RETRY_SCHEDULE": "200ms", "WEBHOOK_BREAKER_AFTER": "1000"]
            let first = try await Replica(schema: schema, settings: settings)
            defer { first.stop() }
            let second = try await Replica(schema: schema, settings: settings)
            defer { second.stop() }
            let subscription = try await first.subscribe(consumer, "/hang/replicas")
            let events = 6
            for _ in 0..<events { try await first.post(RequestIDForTests.jobID(), "Running") }
            var deliveries: [[String: Any]] = []
            #expect(
                try await eventually(within: .seconds(120), every: .milliseconds(500)) {
                    deliveries = try await Self.deliveries(second.base, subscription)
                    return deliveries.count == events && deliveries.allSatisfy { $0["Status"] as? String == "succeeded" }
                }, "\(deliveries.map { $0["Status"] ?? "-" })")
            // The consumer logs a POST when it arrives, and every attempt has ended by now.
            let received = consumer.deliveries(path: "/hang/replicas")
            #expect(received.allSatisfy { $0.verified })
            for delivery in deliveries {
                let attempts = delivery["Attempts"] as? [[String: Any]] ?? []
                let id = delivery["EventId"] as? String
                #expect(attempts.map { $0["StatusCode"] as? Int } == [nil, 200], "\(id ?? "-"): \(attempts)")
                let cut = attempts.filter { ($0["Error"] as? String)?.contains("the lease ran out") == true }
                #expect(cut.isEmpty, "\(id ?? "-"): attempts taken again by the other replica: \(cut)")
                #expect(received.filter { $0.id == id }.map(\.status) == ["hung", "200"], "\(id ?? "-"): one POST per attempt")
            }
            #expect(received.count == events * 2)
        }
    }

    /// Two replicas deliver together: every event arrives exactly once (no attempt is sent twice), each
    /// job's in order.
    @Test(.timeLimit(.minutes(8)))
    func twoReplicas_DeliverTogether_EachEventOnceInOrder() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await Self.withSchema { schema in
            let first = try await Replica(schema: schema)
            defer { first.stop() }
            let second = try await Replica(schema: schema)
            defer { second.stop() }
            _ = try await first.subscribe(consumer, "/ok/replicas")
            let jobs = (0..<30).map { _ in RequestIDForTests.jobID() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, job) in jobs.enumerated() {
                    let replica = index % 2 == 0 ? first : second
                    group.addTask {
                        try await replica.post(job, "Running")
                        try await replica.post(job, "Success")
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await eventually(within: .seconds(90)) { consumer.deliveries(path: "/ok/replicas").count >= 60 })
            let received = consumer.deliveries(path: "/ok/replicas")
            #expect(received.count == 60)
            #expect(Set(received.map(\.id)).count == received.count)
            #expect(received.allSatisfy { $0.verified && $0.status == "200" })
            for job in jobs {
                #expect(received.filter { $0.job == job }.map(\.state) == ["Running", "Success"])
            }
        }
    }
}
