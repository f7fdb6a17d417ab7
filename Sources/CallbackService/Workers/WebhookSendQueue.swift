/// The POSTs waiting for one of the sender's connection slots: queued per subscription, taken in turn
/// (round-robin over the subscriptions with POSTs waiting, first given first sent within one), and no
/// subscription holding more than ``perSubscriptionLimit`` slots at once.
///
/// Why: a consumer that never answers holds each slot it gets until the timeout. With one queue for every
/// subscription, a walk of hundreds of events to such a consumer took every slot, round after round of
/// timeouts, and every other subscription's POSTs waited behind it for minutes. Now it holds at most its
/// share, and the others' POSTs keep taking the free slots.
///
/// Pure: no clock, no I/O; the sender thread keeps it under its lock.
struct WebhookSendQueue<Item> {
    /// Most slots one subscription's POSTs hold at once.
    let perSubscriptionLimit: Int

    private struct Waiting {
        var items: [Item] = []
        /// Index of the next item: taking from the front without shifting the array each time.
        var head = 0

        var count: Int { items.count - head }
        var isEmpty: Bool { head == items.count }

        mutating func popFirst() -> Item {
            let item = items[head]
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 1024 {
                items.removeFirst(head)
                head = 0
            }
            return item
        }
    }

    private var waiting: [String: Waiting] = [:]
    /// The subscriptions with POSTs waiting, in turn order; `turn` is the next one's index.
    private var turns: [String] = []
    private var turn = 0
    private var inFlight: [String: Int] = [:]

    init(perSubscriptionLimit: Int) {
        self.perSubscriptionLimit = max(1, perSubscriptionLimit)
    }

    /// POSTs waiting, of every subscription.
    var count: Int { waiting.values.reduce(0) { $0 + $1.count } }

    /// Slots the subscription's POSTs hold now.
    func inFlight(of subscription: String) -> Int { inFlight[subscription, default: 0] }

    /// Queues `item` behind the subscription's other waiting POSTs.
    mutating func append(_ item: Item, subscription: String) {
        // A subscription has its turn exactly while it has POSTs waiting.
        if waiting[subscription] == nil { turns.append(subscription) }
        waiting[subscription, default: Waiting()].items.append(item)
    }

    /// Takes up to `room` POSTs to start, one subscription after another, skipping those at their limit;
    /// each counts as holding a slot until ``ended(subscription:)``.
    mutating func take(room: Int) -> [(item: Item, subscription: String)] {
        var taken: [(item: Item, subscription: String)] = []
        // Subscriptions passed over in a row because they are at their limit: once every one was, none can go.
        var passedOver = 0
        while taken.count < room, !turns.isEmpty, passedOver < turns.count {
            if turn >= turns.count { turn = 0 }
            let subscription = turns[turn]
            guard inFlight[subscription, default: 0] < perSubscriptionLimit else {
                turn += 1
                passedOver += 1
                continue
            }
            passedOver = 0
            taken.append((waiting[subscription]!.popFirst(), subscription))
            inFlight[subscription, default: 0] += 1
            if waiting[subscription]!.isEmpty {
                waiting[subscription] = nil
                turns.remove(at: turn)  // the next subscription moves into this turn
            } else {
                turn += 1
            }
        }
        return taken
    }

    /// A POST of the subscription has ended: its slot is free.
    mutating func ended(subscription: String) {
        guard let held = inFlight[subscription] else { return }
        inFlight[subscription] = held > 1 ? held - 1 : nil
    }

    /// Takes the subscription's waiting POSTs that `isTaken` picks (they are to be answered without being
    /// sent), leaving its others in their order and its turn.
    mutating func remove(subscription: String, where isTaken: (Item) -> Bool) -> [Item] {
        guard let queue = waiting[subscription] else { return [] }
        let left = queue.items[queue.head...]
        let taken = left.filter(isTaken)
        guard !taken.isEmpty else { return [] }
        let kept = left.filter { !isTaken($0) }
        if !kept.isEmpty {
            waiting[subscription] = Waiting(items: Array(kept))
            return taken
        }
        waiting[subscription] = nil
        if let index = turns.firstIndex(of: subscription) {
            turns.remove(at: index)
            // The same subscription stays next; one at `turn` leaves the next one in its place.
            if index < turn { turn -= 1 }
        }
        return taken
    }

    /// Takes every waiting POST at once, limits aside (they are to be answered without being sent).
    mutating func takeAll() -> [Item] {
        let all = turns.flatMap { subscription in waiting[subscription].map { Array($0.items[$0.head...]) } ?? [] }
        waiting = [:]
        turns = []
        turn = 0
        return all
    }
}
