import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension URLSession {
    /// Sends `request` and returns the answer, bounded by the request's `timeoutInterval`.
    ///
    /// swift-corelibs-foundation's async `data(for:)` forwards task cancellation as
    /// `URLSessionTask.cancel()`, which does a `DispatchQueue.sync` on the session's queue from the
    /// cancelling thread; on a 2-core machine that was seen to block both cooperative threads for good
    /// (a test run hung while stopping a server with deliveries in flight). So the task is started with a
    /// completion handler, and a cancelled caller simply waits for the answer or the timeout.
    public func exchange(_ request: URLRequest) async throws -> (Data, URLResponse) {
        try await withCheckedThrowingContinuation { continuation in
            let task = dataTask(with: request) { data, response, error in
                if let error {
                    continuation.resume(throwing: error)
                } else if let response {
                    continuation.resume(returning: (data ?? Data(), response))
                } else {
                    continuation.resume(throwing: URLError(.badServerResponse))
                }
            }
            task.resume()
        }
    }
}
