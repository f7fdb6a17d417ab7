import CIModel
import Foundation

/// The filters and paging of `GET /jobs` (DescribeMediaJobs).
public struct CIJobListQuery: Sendable, Hashable {
    /// The job type. Default: `ExtractDigitalWatermark`.
    public var tag: String = "ExtractDigitalWatermark"
    /// The queue; `nil` uses ``CIConfiguration/queueID`` (CI documents the parameter as required).
    public var queueID: String?
    /// States to include, for example `["Success", "Failed"]`; empty means all (CI's `All`).
    public var states: [String] = []
    /// Only jobs created at or after this instant.
    public var startCreationTime: Date?
    /// Only jobs created at or before this instant.
    public var endCreationTime: Date?
    /// Jobs per page, 1...100. Default: 100.
    public var size: Int = 100
    /// `Desc` (newest first, CI's default) or `Asc`.
    public var orderByTime: String = "Desc"
    /// The previous page's `NextToken`; `nil` for the first page.
    public var nextToken: String?
    /// The UTC offset the two times are written in. Default: +08:00, the offset CI's own documents and
    /// responses use; any offset denotes the same instant.
    public var utcOffsetSeconds: Int = 8 * 3600

    /// The largest page CI serves.
    public static let maxSize = 100

    /// Creates a query; every parameter has the documented default.
    public init(
        tag: String = "ExtractDigitalWatermark",
        queueID: String? = nil,
        states: [String] = [],
        startCreationTime: Date? = nil,
        endCreationTime: Date? = nil,
        size: Int = 100,
        orderByTime: String = "Desc",
        nextToken: String? = nil
    ) {
        self.tag = tag
        self.queueID = queueID
        self.states = states
        self.startCreationTime = startCreationTime
        self.endCreationTime = endCreationTime
        self.size = size
        self.orderByTime = orderByTime
        self.nextToken = nextToken
    }

    /// Rejects what CI would reject, naming the parameter.
    /// - Throws: ``CIClientError`` with code ``CIClientError/Code/invalidRequest``.
    public func validate() throws(CIClientError) {
        if tag.isEmpty { throw CIClientError.invalidRequest("tag must not be empty") }
        if !(1...Self.maxSize).contains(size) { throw CIClientError.invalidRequest("size must be 1...\(Self.maxSize)") }
        if orderByTime != "Desc" && orderByTime != "Asc" { throw CIClientError.invalidRequest("orderByTime must be Desc or Asc") }
        if states.contains(where: { $0.isEmpty || $0.contains(",") }) {
            throw CIClientError.invalidRequest("states must be non-empty names without ','")
        }
        if let startCreationTime, let endCreationTime, startCreationTime > endCreationTime {
            throw CIClientError.invalidRequest("startCreationTime is after endCreationTime")
        }
    }

    /// The query parameters, decoded, in the order they are sent; unset ones are left out.
    /// - Parameter defaultQueueID: Used when ``queueID`` is `nil`.
    public func parameters(defaultQueueID: String?) -> [(name: String, value: String)] {
        var items: [(name: String, value: String)] = [(name: "tag", value: tag)]
        if let queue = queueID ?? defaultQueueID { items.append((name: "queueId", value: queue)) }
        if !states.isEmpty { items.append((name: "states", value: states.joined(separator: ","))) }
        if let startCreationTime {
            items.append((name: "startCreationTime", value: CITime.format(startCreationTime, utcOffsetSeconds: utcOffsetSeconds)))
        }
        if let endCreationTime {
            items.append((name: "endCreationTime", value: CITime.format(endCreationTime, utcOffsetSeconds: utcOffsetSeconds)))
        }
        items.append((name: "size", value: String(size)))
        items.append((name: "orderByTime", value: orderByTime))
        if let nextToken { items.append((name: "nextToken", value: nextToken)) }
        return items
    }
}

/// CI's time text: `2022-06-30T18:42:20+0800` (no colon in the offset, whole seconds).
public enum CITime {
    /// Formats `date`, truncated to the second, in `utcOffsetSeconds`.
    /// - Parameters:
    ///   - date: The instant.
    ///   - utcOffsetSeconds: The offset to write it in. Default: +08:00.
    /// - Returns: For example `2022-06-30T18:42:20+0800`; UTC is written `+0000`, never `Z`.
    public static func format(_ date: Date, utcOffsetSeconds: Int = 8 * 3600) -> String {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let rfc3339 = CITimestamp(secondsSince1970: seconds, utcOffsetSeconds: utcOffsetSeconds).rfc3339
        // rfc3339 ends in "Z" for UTC and "±hh:mm" otherwise; CI writes "±hhmm".
        if rfc3339.hasSuffix("Z") { return String(rfc3339.dropLast()) + "+0000" }
        var text = rfc3339
        text.remove(at: text.index(text.endIndex, offsetBy: -3))
        return text
    }
}
