/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
///
/// How a test waits for a state (a waiter asleep, a counter reached, a callback stored), never with a
/// fixed sleep: the caller `#expect`s or `#require`s the result, so a state that never comes fails the
/// test instead of hanging it, and a loaded machine only makes the wait longer.
public func eventually(
    within timeout: Duration = .seconds(20), every interval: Duration = .milliseconds(20), _ condition: () async throws -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}
