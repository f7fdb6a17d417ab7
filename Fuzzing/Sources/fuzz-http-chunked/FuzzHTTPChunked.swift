import FuzzSupport
import HTTPWire

// Fuzzes the chunked body decoding of HTTPRequestParser: the input is what follows a fixed
// `Transfer-Encoding: chunked` head (chunk-size lines, extensions, data, trailers, pipelined bytes).
//
// Invariants beyond "does not crash":
// - the outcome does not depend on how the stream is split (whole, cut at derived points, byte by byte);
// - an accepted body equals what a plain reference de-chunker reads from the same bytes;
// - the body, re-chunked in derived sizes with an extension and a trailer, parses to the same body.

private let limits = HTTPParserLimits(maxHeaderBytes: 1024, maxBodyBytes: 2048, maxHeaderCount: 12)
private let head = Array("POST /v1/callbacks HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)

@_cdecl("fuzz_http_chunked_main")
public func fuzzHTTPChunkedMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, target: fuzzHTTPChunked)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPChunked(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let chunked = FuzzInput.bytes(data, size)
    let bytes = head + chunked
    let whole = ParserOutcome.run(bytes, cuts: [], limits: limits)

    let cuts = FuzzInput.cuts(chunked, count: 3).map { $0 + head.count }
    let pieces = ParserOutcome.run(bytes, cuts: cuts, limits: limits)
    invariant(pieces == whole, "split at \(cuts): \(pieces) != whole: \(whole)")
    if chunked.count <= 512 {
        let trickled = ParserOutcome.run(bytes, cuts: Array(head.count..<bytes.count), limits: limits)
        invariant(trickled == whole, "byte by byte: \(trickled) != whole: \(whole)")
    }

    guard let first = whole.requests.first else { return 0 }
    invariant(first.body.count <= limits.maxBodyBytes, "body of \(first.body.count) bytes passed the limit")
    invariant(!first.headers.contains(name: "Content-Length"), "a chunked request gained a Content-Length")
    let reference = referenceDechunk(chunked)
    invariant(reference == first.body, "parser body (\(first.body.count) bytes) != reference (\(reference.map { "\($0.count) bytes" } ?? "refused"))")

    let rechunked = head + rechunk(first.body, seed: FuzzInput.hash(chunked))
    let again = ParserOutcome.run(rechunked, cuts: [], limits: limits)
    invariant(
        again.requests.map(\.body) == [first.body] && again.end == .needMoreData(partial: false),
        "re-chunked body of \(first.body.count) bytes parsed as \(again)"
    )
    return 0
}

/// The simplest reading of RFC 9112 §7.1: hex size, optional `;extension`, CRLF, data, CRLF; a zero
/// size ends the body after trailer lines and an empty line. Returns nil where it cannot read a body.
private func referenceDechunk(_ bytes: [UInt8]) -> [UInt8]? {
    var body: [UInt8] = []
    var i = 0
    func line() -> ArraySlice<UInt8>? {
        var j = i
        while j + 1 < bytes.count, !(bytes[j] == 13 && bytes[j + 1] == 10) { j += 1 }
        guard j + 1 < bytes.count else { return nil }
        defer { i = j + 2 }
        return bytes[i..<j]
    }
    while true {
        guard let sizeLine = line() else { return nil }
        let digits = sizeLine.prefix { $0 != UInt8(ascii: ";") && $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
        guard !digits.isEmpty, let size = Int(String(decoding: digits, as: UTF8.self), radix: 16) else { return nil }
        if size == 0 { break }
        guard i + size + 2 <= bytes.count, bytes[i + size] == 13, bytes[i + size + 1] == 10 else { return nil }
        body += bytes[i..<i + size]
        i += size + 2
    }
    while true {
        guard let trailer = line() else { return nil }
        if trailer.isEmpty { return body }
    }
}

/// Chunks `body` in sizes derived from `seed`, with an extension on one size line and one trailer.
private func rechunk(_ body: [UInt8], seed: UInt64) -> [UInt8] {
    var out: [UInt8] = []
    var state = seed | 1
    var i = 0
    while i < body.count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let size = min(body.count - i, 1 + Int((state >> 33) % 700))
        out += Array(String(size, radix: 16, uppercase: state & 0x200 == 0).utf8)
        if state & 0x400 == 0 { out += Array(";ext=\"v\"".utf8) }
        out += [13, 10] + body[i..<i + size] + [13, 10]
        i += size
    }
    out += Array("0\r\nX-Trailer: t\r\n\r\n".utf8)
    return out
}
