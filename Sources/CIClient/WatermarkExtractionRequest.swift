import CIModel

/// An `ExtractDigitalWatermark` job to submit with `POST /jobs`: read the text watermark out of a video.
public struct WatermarkExtractionRequest: Sendable, Hashable {
    /// The input object's key in the bucket, for example `input/demo.mp4`. One leading `/` is dropped.
    public var object: String
    /// Free text CI echoes back in every JobsDetail: printable ASCII, at most 1024 bytes.
    public var userData: String?
    /// Priority, 0 (default on CI) to 2.
    public var jobLevel: Int?
    /// Where CI posts the callback; `nil` uses the queue's setting, `"no"` asks for none.
    public var callbackURL: String?
    /// The callback's format. Default: JSON (CI's own default is XML; ci-callbackd reads both).
    public var callbackFormat: CallbackFormat = .json
    /// The queue; `nil` uses ``CIConfiguration/queueID``, and CI's default queue when that is `nil` too.
    public var queueID: String?

    /// The longest object key COS accepts, in UTF-8 bytes.
    public static let maxObjectKeyBytes = 850
    /// The longest `UserData` CI accepts, in bytes.
    public static let maxUserDataBytes = 1024
    /// The longest `CallBack` URL this client sends, in bytes (far above any real callback URL).
    public static let maxCallbackURLBytes = 2048

    /// Creates a request.
    public init(
        object: String,
        userData: String? = nil,
        jobLevel: Int? = nil,
        callbackURL: String? = nil,
        callbackFormat: CallbackFormat = .json,
        queueID: String? = nil
    ) {
        self.object = object
        self.userData = userData
        self.jobLevel = jobLevel
        self.callbackURL = callbackURL
        self.callbackFormat = callbackFormat
        self.queueID = queueID
    }

    /// The key as sent: ``object`` without one leading `/` (CI keys are relative to the bucket root).
    public var objectKey: String {
        object.hasPrefix("/") ? String(object.dropFirst()) : object
    }

    /// Checks CI's documented limits before anything is sent.
    ///
    /// - `Object`: non-empty after dropping one leading `/`, at most 850 UTF-8 bytes, no control
    ///   characters (XML 1.0 cannot carry most of them).
    /// - `UserData`: printable ASCII (0x20–0x7E), at most 1024 bytes.
    /// - `JobLevel`: 0, 1 or 2.
    /// - `CallBack`: `no`, or an `http`/`https` URL without spaces or control characters.
    /// - `QueueId`: letters and digits.
    /// - Throws: ``WatermarkRequestError`` whose ``WatermarkRequestError/field`` names the element.
    public func validate() throws(WatermarkRequestError) {
        let key = objectKey
        if key.isEmpty {
            throw WatermarkRequestError(field: "Object", reason: "must not be empty")
        }
        if key.utf8.count > Self.maxObjectKeyBytes {
            throw WatermarkRequestError(field: "Object", reason: "must be at most \(Self.maxObjectKeyBytes) bytes")
        }
        if key.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || (0xFFFE...0xFFFF).contains($0.value) }) {
            throw WatermarkRequestError(field: "Object", reason: "must not contain control characters")
        }
        if let userData {
            if userData.utf8.count > Self.maxUserDataBytes {
                throw WatermarkRequestError(field: "UserData", reason: "must be at most \(Self.maxUserDataBytes) bytes")
            }
            if !userData.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) {
                throw WatermarkRequestError(field: "UserData", reason: "must be printable ASCII (0x20-0x7E)")
            }
        }
        if let jobLevel, !(0...2).contains(jobLevel) {
            throw WatermarkRequestError(field: "JobLevel", reason: "must be 0, 1 or 2")
        }
        if let callbackURL, callbackURL != "no" {
            let lowered = callbackURL.lowercased()
            let hasScheme = lowered.hasPrefix("http://") || lowered.hasPrefix("https://")
            let hostStart = callbackURL.drop(while: { $0 != "/" }).dropFirst(2)
            if !hasScheme || hostStart.isEmpty || hostStart.first == "/" {
                throw WatermarkRequestError(field: "CallBack", reason: "must be an http or https URL, or \"no\"")
            }
            if callbackURL.utf8.count > Self.maxCallbackURLBytes || callbackURL.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) {
                throw WatermarkRequestError(field: "CallBack", reason: "must be at most \(Self.maxCallbackURLBytes) bytes without spaces or control characters")
            }
        }
        if let queueID, queueID.isEmpty || !queueID.utf8.allSatisfy(CIConfiguration.isAlphanumeric) {
            throw WatermarkRequestError(field: "QueueId", reason: "must be letters and digits")
        }
    }

    /// The `POST /jobs` body, on one line, every value XML-escaped.
    ///
    /// `<Request><Tag>ExtractDigitalWatermark</Tag><Input><Object>…</Object></Input><Operation>
    /// <ExtractDigitalWatermark><Type>Text</Type><Version>V1</Version></ExtractDigitalWatermark>
    /// <UserData>…</UserData><JobLevel>…</JobLevel></Operation><QueueId>…</QueueId><CallBack>…</CallBack>
    /// <CallBackFormat>JSON</CallBackFormat></Request>`; optional elements are left out when unset.
    /// - Parameter defaultQueueID: Used when ``queueID`` is `nil`.
    public func xmlBody(defaultQueueID: String?) -> String {
        func element(_ name: String, _ text: String) -> CIField { CIField(name: name, value: .text(text)) }
        var operation = [
            CIField(name: "ExtractDigitalWatermark", value: .element([element("Type", "Text"), element("Version", "V1")]))
        ]
        if let userData { operation.append(element("UserData", userData)) }
        if let jobLevel { operation.append(element("JobLevel", String(jobLevel))) }
        var request = [
            element("Tag", "ExtractDigitalWatermark"),
            CIField(name: "Input", value: .element([element("Object", objectKey)])),
            CIField(name: "Operation", value: .element(operation)),
        ]
        if let queue = queueID ?? defaultQueueID { request.append(element("QueueId", queue)) }
        if let callbackURL { request.append(element("CallBack", callbackURL)) }
        request.append(element("CallBackFormat", callbackFormat.rawValue))
        // CINodeXML escapes every text value, the same encoder the lookup API uses.
        return CINodeXML.encode(.element(request), rootName: "Request")
    }
}

/// A submission rejected before it was sent: which element, and why. Never contains the value itself.
public struct WatermarkRequestError: Error, Sendable, Hashable, CustomStringConvertible {
    /// CI's element name: `Object`, `UserData`, `JobLevel`, `CallBack` or `QueueId`.
    public var field: String
    /// What the value breaks.
    public var reason: String

    /// Creates an error.
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(field) \(reason)" }
}
