import CIClient
import CIModel
import Foundation

/// Why a request was refused with 400 `InvalidArgument`; the message goes into the `<Error>` body.
struct RequestProblem: Error {
    var message: String
}

/// Percent-decoding of the request path, which the signature covers in decoded form.
enum SimulatorPath {
    /// Decodes `%XX` escapes (not `+`); `nil` for a malformed escape or a result that is not UTF-8.
    static func decode(_ raw: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(raw.utf8.count)
        var iterator = raw.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// The `Host` header's forms.
enum SimulatorHost {
    /// The host name of a `Host` value without its port, lower-cased and without IPv6 brackets, as Python's
    /// `urlparse(url).hostname` gives it (`127.0.0.1:8090` → `127.0.0.1`, `[::1]:8090` → `::1`); `nil` when
    /// the value has no port.
    static func withoutPort(_ host: String) -> String? {
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]"), host[host.index(after: close)...].hasPrefix(":") else { return nil }
            return host[host.index(after: host.startIndex)..<close].lowercased()
        }
        guard let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon else { return nil }
        return host[..<colon].lowercased()
    }
}

/// A `POST /jobs` body, read as CI would: the simulator checks the request itself rather than trusting
/// the client's validation, so client bugs show up as 400s.
struct SubmitRequest {
    var object: String
    var userData: String?
    var jobLevel: Int
    var queueID: String
    var callbackURL: String?
    var callbackFormat: CallbackFormat

    static func parse(_ body: [UInt8], configuration: SimulatorConfiguration) -> Result<SubmitRequest, RequestProblem> {
        guard let root = try? CINodeXML.decode(body, limits: CIDecodingLimits(maxDepth: 16, maxElements: 1024)), root.name == "Request" else {
            return .failure(RequestProblem(message: "the body is not a <Request> XML document"))
        }
        func text(_ path: String...) -> String? {
            guard let value = root.value.node(atPath: path)?.text else { return nil }
            let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
            return trimmed.isEmpty ? nil : trimmed
        }
        guard let tag = text("Tag") else { return .failure(RequestProblem(message: "Tag is required")) }
        guard tag == "ExtractDigitalWatermark" else {
            return .failure(RequestProblem(message: "Tag \(tag) is not supported by the simulator"))
        }
        guard var object = text("Input", "Object") else { return .failure(RequestProblem(message: "Input.Object is required")) }
        if object.hasPrefix("/") { object.removeFirst() }
        guard !object.isEmpty else { return .failure(RequestProblem(message: "Input.Object is required")) }
        guard root.value.node(atPath: ["Operation", "ExtractDigitalWatermark"]) != nil else {
            return .failure(RequestProblem(message: "Operation.ExtractDigitalWatermark is required"))
        }
        if let type = text("Operation", "ExtractDigitalWatermark", "Type"), type != "Text" {
            return .failure(RequestProblem(message: "Operation.ExtractDigitalWatermark.Type must be Text"))
        }
        // UserData is not trimmed: CI echoes it byte for byte.
        let userData = root.value.node(atPath: ["Operation", "UserData"])?.text.flatMap { $0.isEmpty ? nil : $0 }
        if let userData, userData.utf8.count > 1024 || !userData.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) {
            return .failure(RequestProblem(message: "Operation.UserData must be printable ASCII of at most 1024 bytes"))
        }
        var jobLevel = 0
        if let level = text("Operation", "JobLevel") {
            guard let value = Int(level), (0...2).contains(value) else {
                return .failure(RequestProblem(message: "Operation.JobLevel must be 0, 1 or 2"))
            }
            jobLevel = value
        }
        var callbackFormat = CallbackFormat.xml
        if let format = text("CallBackFormat") {
            guard let parsed = CallbackFormat(rawValue: format) else {
                return .failure(RequestProblem(message: "CallBackFormat must be XML or JSON"))
            }
            callbackFormat = parsed
        }
        var callbackURL = text("CallBack") ?? configuration.defaultCallbackURL
        if callbackURL == "no" { callbackURL = nil }
        if let url = callbackURL, URL(string: url)?.host == nil || !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            return .failure(RequestProblem(message: "CallBack must be an http or https URL"))
        }
        return .success(
            SubmitRequest(
                object: object, userData: userData, jobLevel: jobLevel, queueID: text("QueueId") ?? configuration.defaultQueueID,
                callbackURL: callbackURL, callbackFormat: callbackFormat
            ))
    }
}

/// The parameters of `GET /jobs` (DescribeMediaJobs).
struct ListQuery {
    var tag: String
    var queueID: String?
    /// `nil` for all states.
    var states: Set<JobState>?
    var start: Date?
    var end: Date?
    var size: Int
    var descending: Bool
    /// The sequence number of the previous page's last job.
    var afterSequence: Int?

    private static let knownStates: Set<String> = ["Submitted", "Running", "Success", "Failed", "Pause", "Cancel"]

    /// Tokens are opaque to clients; this one is the last job's sequence number behind a prefix.
    static func token(for sequence: Int) -> String { "sim" + String(sequence, radix: 16) }

    static func parse(_ items: [(name: String, value: String)], configuration: SimulatorConfiguration) -> Result<ListQuery, RequestProblem> {
        var values: [String: String] = [:]
        for item in items where values[item.name] == nil { values[item.name] = item.value }
        func nonEmpty(_ name: String) -> String? { values[name].flatMap { $0.isEmpty ? nil : $0 } }

        guard let tag = nonEmpty("tag") else { return .failure(RequestProblem(message: "tag is required")) }
        var query = ListQuery(
            tag: tag, queueID: nonEmpty("queueId"), states: nil, start: nil, end: nil, size: configuration.defaultPageSize, descending: true,
            afterSequence: nil)
        if let states = nonEmpty("states"), states != "All" {
            let names = states.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard names.allSatisfy(knownStates.contains) else {
                return .failure(RequestProblem(message: "states must be All or a comma-separated list of job states"))
            }
            query.states = Set(names.map(JobState.init(rawValue:)))
        }
        for (name, keyPath) in [("startCreationTime", \ListQuery.start), ("endCreationTime", \ListQuery.end)] {
            guard let text = nonEmpty(name) else { continue }
            guard let timestamp = CITimestamp(ciText: text) else {
                return .failure(RequestProblem(message: "\(name) must look like 2001-01-01T00:00:00+0800"))
            }
            query[keyPath: keyPath] = timestamp.date
        }
        if let size = nonEmpty("size") {
            guard let value = Int(size), (1...configuration.maxPageSize).contains(value) else {
                return .failure(RequestProblem(message: "size must be 1...\(configuration.maxPageSize)"))
            }
            query.size = value
        }
        if let order = nonEmpty("orderByTime") {
            guard order == "Desc" || order == "Asc" else { return .failure(RequestProblem(message: "orderByTime must be Desc or Asc")) }
            query.descending = order == "Desc"
        }
        if let token = nonEmpty("nextToken") {
            guard token.hasPrefix("sim"), let sequence = Int(token.dropFirst(3), radix: 16), sequence > 0 else {
                return .failure(RequestProblem(message: "nextToken is invalid"))
            }
            query.afterSequence = sequence
        }
        return .success(query)
    }
}
