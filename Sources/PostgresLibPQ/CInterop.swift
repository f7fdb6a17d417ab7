import CLibPQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import TimeUnits

/// Query parameters laid out for `PQexecPrepared` / `PQsendQueryPrepared`.
///
/// Every value lives in ONE byte buffer so a single `withUnsafeBytes` scope keeps all parameter pointers
/// valid for the libpq call, and none can escape it. Text values are NUL-terminated (libpq reads text
/// parameters as C strings); `bytea` goes in binary format with an explicit length.
struct EncodedParameters {
    private(set) var types: [UInt32] = []
    private var storage: [UInt8] = []
    /// Offset of each value in `storage`; -1 for SQL NULL (a NULL pointer for libpq).
    private var offsets: [Int] = []
    private var lengths: [Int32] = []
    private var formats: [Int32] = []

    init(_ binds: [PostgresValue], operation: String) throws(PostgresError) {
        self.types.reserveCapacity(binds.count)
        self.offsets.reserveCapacity(binds.count)
        self.lengths.reserveCapacity(binds.count)
        self.formats.reserveCapacity(binds.count)
        // One allocation of the right size: a large body grown by doubling would cost up to twice its size.
        self.storage.reserveCapacity(binds.reduce(1) { $0 + $1.encodedSizeEstimate })
        for bind in binds {
            self.types.append(bind.typeOID)
            switch bind {
            case .null:
                self.offsets.append(-1)
                self.lengths.append(0)
                self.formats.append(0)
            case .text(let text):
                try self.appendText(text, operation: operation)
            case .textArray(let elements):
                try self.appendText(PostgresValue.arrayLiteral(elements), operation: operation)
            case .byteaArray(let elements):
                guard let bytes = PostgresValue.binaryByteaArray(elements) else {
                    throw PostgresError(
                        code: .queryFailed,
                        sqlState: "54000",
                        serverMessage: "bytea[] parameter exceeds the 2 GiB protocol limit",
                        operation: operation
                    )
                }
                self.appendBinary(bytes)
            case .bytea(let bytes):
                guard Int32(exactly: bytes.count) != nil else {
                    throw PostgresError(
                        code: .queryFailed,
                        sqlState: "54000",
                        serverMessage: "bytea parameter exceeds the 2 GiB protocol limit",
                        operation: operation
                    )
                }
                self.appendBinary(bytes)
            }
        }
        // Never empty, so `baseAddress` is never nil and an empty bytea still gets a non-NULL pointer
        // (a NULL pointer would mean SQL NULL).
        self.storage.append(0)
    }

    var count: Int32 { Int32(self.types.count) }

    /// `bytes.count` fits in Int32: callers check.
    private mutating func appendBinary(_ bytes: [UInt8]) {
        self.offsets.append(self.storage.count)
        self.storage.append(contentsOf: bytes)
        self.lengths.append(Int32(bytes.count))
        self.formats.append(1)
    }

    private mutating func appendText(_ text: String, operation: String) throws(PostgresError) {
        let utf8 = text.utf8
        // memchr over the string's own bytes: `contains` went a byte at a time, 1.4 % of the service's CPU
        // at peak ingest (perf).
        let hasNUL =
            utf8.withContiguousStorageIfAvailable { bytes in
                guard let base = bytes.baseAddress, !bytes.isEmpty else { return false }
                return memchr(base, 0, bytes.count) != nil
            } ?? utf8.contains(0)
        guard !hasNUL else { throw .nulInText(operation: operation) }
        self.offsets.append(self.storage.count)
        self.storage.append(contentsOf: utf8)
        self.storage.append(0)
        self.lengths.append(Int32(clamping: utf8.count))
        self.formats.append(0)
    }

    /// Calls `body` with libpq's three parallel parameter arrays, valid only during the call.
    func withPointers<R>(
        _ body: (
            _ values: UnsafePointer<UnsafePointer<CChar>?>?,
            _ lengths: UnsafePointer<Int32>?,
            _ formats: UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        self.storage.withUnsafeBytes { raw in
            let base = raw.baseAddress!
            let pointers: [UnsafePointer<CChar>?] = self.offsets.map { offset in
                offset < 0 ? nil : (base + offset).assumingMemoryBound(to: CChar.self)
            }
            return pointers.withUnsafeBufferPointer { values in
                self.lengths.withUnsafeBufferPointer { lengths in
                    self.formats.withUnsafeBufferPointer { formats in
                        body(values.baseAddress, lengths.baseAddress, formats.baseAddress)
                    }
                }
            }
        }
    }
}

/// Calls `body` with a NULL-terminated array of C strings (as `PQconnectdbParams` wants), valid only during
/// the call. Strings are cut at an embedded NUL, as C would read them anyway.
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var storage: [UInt8] = []
    var offsets: [Int] = []
    for string in strings {
        offsets.append(storage.count)
        storage.append(contentsOf: string.utf8.prefix { $0 != 0 })
        storage.append(0)
    }
    storage.append(0)
    return storage.withUnsafeBytes { raw in
        let base = raw.baseAddress!
        var pointers: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
        pointers.append(nil)
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// Socket readiness for the non-blocking paths (pipeline, notifications).
enum SocketWait {
    struct Readiness {
        var readable: Bool
        var writable: Bool
    }

    /// Waits until `socket` is readable (or writable, when asked) or `timeout` passes (`nil`: no limit).
    /// Hang-up and error count as readable, so the caller's next libpq read reports what happened.
    static func wait(
        socket: Int32,
        forWrite: Bool,
        timeout: Duration?,
        operation: String
    ) throws(PostgresError) -> Readiness {
        var events = Int16(POLLIN)
        if forWrite { events |= Int16(POLLOUT) }
        var descriptor = pollfd(fd: socket, events: events, revents: 0)
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            var milliseconds: Int32 = -1
            if let deadline {
                let remaining = deadline - ContinuousClock.now
                milliseconds = remaining <= .zero ? 0 : Int32(clamping: remaining.inMillisecondsRoundedUp)
            }
            let ready = poll(&descriptor, 1, milliseconds)
            if ready < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .connectionLost("poll failed: \(String(cString: strerror(code)))", operation: operation)
            }
            let revents = Int32(descriptor.revents)
            return Readiness(
                readable: revents & (Int32(POLLIN) | Int32(POLLHUP) | Int32(POLLERR)) != 0,
                writable: revents & Int32(POLLOUT) != 0
            )
        }
    }

}

/// Copies a C string from libpq, or `nil` for a NULL pointer.
func optionalString(_ pointer: UnsafePointer<CChar>?) -> String? {
    pointer.map { String(cString: $0) }
}
