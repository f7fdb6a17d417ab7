import FuzzSupport
import HTTPWire

// Fuzzes HTTPRequestParser with arbitrary byte streams (pipelined requests, any framing).
//
// Invariants beyond "does not crash":
// - the outcome (requests, rejection, partial state) does not depend on how the stream is split:
//   whole, cut at derived points, and byte by byte for short inputs;
// - an accepted request respects the limits and has an origin-form or `*` target;
// - an accepted request, written out again with Content-Length framing, parses to the same request.
//
// Small limits, so that inputs of a few KiB reach every limit check.

private let limits = HTTPParserLimits(maxHeaderBytes: 1024, maxBodyBytes: 2048, maxHeaderCount: 12)

@_cdecl("fuzz_http_request_main")
public func fuzzHTTPRequestMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, target: fuzzHTTPRequest)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzInput.bytes(data, size)
    let whole = ParserOutcome.run(bytes, cuts: [], limits: limits)

    let cuts = FuzzInput.cuts(bytes, count: 3)
    let split = ParserOutcome.run(bytes, cuts: Array(cuts.prefix(1)), limits: limits)
    invariant(split == whole, "split at \(cuts.prefix(1)): \(split) != whole: \(whole)")
    let pieces = ParserOutcome.run(bytes, cuts: cuts, limits: limits)
    invariant(pieces == whole, "split at \(cuts): \(pieces) != whole: \(whole)")
    if bytes.count <= 512 {
        let trickled = ParserOutcome.run(bytes, cuts: Array(1..<max(1, bytes.count)), limits: limits)
        invariant(trickled == whole, "byte by byte: \(trickled) != whole: \(whole)")
    }

    for request in whole.requests {
        check(request)
    }
    return 0
}

private func check(_ request: HTTPRequest) {
    invariant(request.body.count <= limits.maxBodyBytes, "body of \(request.body.count) bytes passed the limit")
    invariant(request.headers.count <= limits.maxHeaderCount, "\(request.headers.count) header fields passed the limit")
    invariant(request.target.hasPrefix("/") || (request.target == "*" && request.method == .options), "target \(request.target)")
    invariant(!request.method.rawValue.isEmpty, "empty method")
    // The accessors routing uses must cope with whatever the parser accepted.
    _ = request.pathSegments
    _ = request.queryItems
    _ = request.keepAlive

    // Write the request out again, framed by Content-Length (`name:value`, no optional whitespace),
    // and parse it: it must come back the same. The head may grow up to threefold: obs-text bytes that
    // are not UTF-8 reach the header values as U+FFFD (3 bytes), so the re-parse allows for that.
    var expected = HTTPHeaders()
    for field in request.headers
    where field.name.lowercased() != "content-length" && field.name.lowercased() != "transfer-encoding" {
        expected.add(name: field.name, value: field.value)
    }
    if !request.body.isEmpty { expected.add(name: "Content-Length", value: String(request.body.count)) }
    var wire = Array("\(request.method.rawValue) \(request.target) \(request.version == .http1_1 ? "HTTP/1.1" : "HTTP/1.0")\r\n".utf8)
    for field in expected {
        wire += Array("\(field.name):\(field.value)\r\n".utf8)
    }
    wire += Array("\r\n".utf8)
    wire += request.body
    var roomier = limits
    roomier.maxHeaderBytes = 3 * limits.maxHeaderBytes
    let again = ParserOutcome.run(wire, cuts: [], limits: roomier)
    var want = request
    want.headers = expected
    invariant(
        again.requests == [want] && again.end == .needMoreData(partial: false),
        "re-serialised \(request.method) \(request.target) parsed as \(again)"
    )
}
