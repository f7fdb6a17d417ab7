import CIModel
import FuzzSupport

// Fuzzes CITimestamp(ciText:) with arbitrary text.
//
// Invariants beyond "does not crash", for every text that parses:
// - the parts are in range (nanoseconds below one second, offset within ±23:59);
// - the RFC 3339 rendering parses to the same instant and offset, and renders identically;
// - the same text with surrounding whitespace parses to the same value (the decoder trims leaves).

@_cdecl("fuzz_ci_timestamp_main")
public func fuzzCITimestampMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, target: fuzzCITimestamp)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCITimestamp(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: FuzzInput.bytes(data, size), as: UTF8.self)
    guard let time = CITimestamp(ciText: text) else { return 0 }
    invariant((0..<1_000_000_000).contains(time.nanoseconds), "nanoseconds \(time.nanoseconds) from \(text.debugDescription)")
    invariant(abs(time.utcOffsetSeconds) < 86_400, "offset \(time.utcOffsetSeconds) s from \(text.debugDescription)")

    let rendered = time.rfc3339
    guard let again = CITimestamp(ciText: rendered) else {
        invariant(false, "\(text.debugDescription) rendered as \(rendered), which does not parse")
        return 0
    }
    invariant(again == time, "\(text.debugDescription) rendered as \(rendered), which parses to \(again.rfc3339)")
    invariant(again.rfc3339 == rendered, "rendering is not stable: \(rendered) became \(again.rfc3339)")
    invariant(CITimestamp(ciText: " \t" + text + "\r\n") == time, "surrounding whitespace changes \(text.debugDescription)")
    _ = time.date
    return 0
}
