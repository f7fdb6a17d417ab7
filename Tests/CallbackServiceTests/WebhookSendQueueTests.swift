import Testing

@testable import CallbackService

/// The sender's queue: subscriptions take turns, each one's POSTs in the order given, and none holds more
/// than its share of the slots.
@Suite("Webhook send queue")
struct WebhookSendQueueTests {
    static func queue(limit: Int, _ waiting: [(String, [String])]) -> WebhookSendQueue<String> {
        var queue = WebhookSendQueue<String>(perSubscriptionLimit: limit)
        for (subscription, items) in waiting {
            for item in items { queue.append(item, subscription: subscription) }
        }
        return queue
    }

    @Test func take_SubscriptionsInTurn_EachOnesPOSTsInTheOrderGiven() {
        var queue = Self.queue(limit: 10, [("a", ["a1", "a2", "a3"]), ("b", ["b1"]), ("c", ["c1", "c2"])])
        #expect(queue.count == 6)
        #expect(queue.take(room: 4).map(\.item) == ["a1", "b1", "c1", "a2"])
        #expect(queue.take(room: 4).map(\.item) == ["c2", "a3"])
        #expect(queue.count == 0)
        #expect(queue.take(room: 4).isEmpty)
    }

    @Test func take_SubscriptionAtItsLimit_IsPassedOver_UntilOneOfItsPOSTsEnds() {
        var queue = Self.queue(limit: 2, [("a", ["a1", "a2", "a3", "a4"]), ("b", ["b1", "b2", "b3"])])
        #expect(queue.take(room: 10).map(\.item) == ["a1", "b1", "a2", "b2"])
        #expect(queue.take(room: 10).isEmpty, "both hold their two slots")
        queue.ended(subscription: "a")
        #expect(queue.take(room: 10).map(\.item) == ["a3"])
        queue.ended(subscription: "b")
        queue.ended(subscription: "b")
        #expect(queue.inFlight(of: "b") == 0)
        #expect(queue.take(room: 10).map(\.item) == ["b3"])
        #expect(queue.inFlight(of: "a") == 2 && queue.count == 1)
    }

    @Test func take_RoomSmallerThanTheWaiting_TakesOnlyTheRoom_NextTakeGoesOnWhereItStopped() {
        var queue = Self.queue(limit: 10, [("a", ["a1", "a2"]), ("b", ["b1", "b2"])])
        #expect(queue.take(room: 1).map(\.item) == ["a1"])
        #expect(queue.take(room: 1).map(\.item) == ["b1"])
        // A subscription that starts waiting joins the end of the round, which is where it had got to.
        queue.append("c1", subscription: "c")
        #expect(queue.take(room: 3).map(\.item) == ["c1", "a2", "b2"])
    }

    @Test func takeAll_TakesEveryWaitingPOST_LimitsAside() {
        var queue = Self.queue(limit: 1, [("a", ["a1", "a2"]), ("b", ["b1"])])
        #expect(queue.take(room: 1).map(\.item) == ["a1"])
        #expect(queue.takeAll().sorted() == ["a2", "b1"])
        #expect(queue.count == 0 && queue.take(room: 5).isEmpty)
    }

    @Test func remove_TakesOnlyThePickedPOSTsOfThatSubscription_TheOthersKeepTheirOrderAndTurns() {
        var queue = Self.queue(limit: 10, [("a", ["a1", "a2"]), ("b", ["b1", "b2 kept", "b3", "b4 kept"]), ("c", ["c1"])])
        #expect(queue.take(room: 2).map(\.item) == ["a1", "b1"])
        #expect(queue.remove(subscription: "b") { !$0.hasSuffix("kept") } == ["b3"])
        #expect(queue.remove(subscription: "c") { _ in false }.isEmpty)
        #expect(queue.remove(subscription: "none") { _ in true }.isEmpty)
        #expect(queue.take(room: 10).map(\.item) == ["c1", "a2", "b2 kept", "b4 kept"])
    }

    @Test func remove_EveryWaitingPOSTOfASubscription_ItsTurnGoes_TheNextSubscriptionStaysNext() {
        var queue = Self.queue(limit: 10, [("a", ["a1", "a2"]), ("b", ["b1", "b2"]), ("c", ["c1", "c2"])])
        #expect(queue.take(room: 2).map(\.item) == ["a1", "b1"])
        // "c" is next; removing "a" (before it in turn order) leaves it next.
        #expect(queue.remove(subscription: "a") { _ in true } == ["a2"])
        #expect(queue.take(room: 1).map(\.item) == ["c1"])
        // "b" is next now; removing it leaves "c", whose turn it becomes.
        #expect(queue.remove(subscription: "b") { _ in true } == ["b2"])
        #expect(queue.take(room: 10).map(\.item) == ["c2"])
        #expect(queue.count == 0)
        queue.append("a3", subscription: "a")
        #expect(queue.take(room: 10).map(\.item) == ["a3"], "a subscription removed whole can queue again")
    }
}
