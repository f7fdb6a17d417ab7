import CIModel
import FuzzSupport

// Fuzzes CallbackDecoder with whole callback bodies. The format is the body's own (`<` is XML, `{` is
// JSON, as the service decides it), so the XML and JSON seeds steer the fuzzer into either parser.
//
// Invariants beyond "does not crash", for every accepted body, with the service's default limits:
// - each JobsDetail has a non-empty JobId and State without surrounding whitespace;
// - no name or text holds U+0000 (PostgreSQL's text and jsonb cannot store it);
// - the normalised job as the store writes it (CINodeJSON) reads back with the decoder's limits, as the
//   XML lookup reads it, and writes again to the same text;
// - the XML lookup's rendering of it parses;
// - every typed timestamp re-renders (RFC 3339) to text that parses to the same instant and offset.

@_cdecl("fuzz_callback_decoder_main")
public func fuzzCallbackDecoderMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, target: fuzzCallbackDecoder)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCallbackDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = FuzzInput.bytes(data, size)
    guard let envelope = try? CallbackDecoder.decode(body) else { return 0 }
    for job in envelope.jobs {
        check(job)
    }
    for id in envelope.nonExistJobIDs {
        invariant(!id.isEmpty && !id.unicodeScalars.contains("\u{0}"), "NonExistJobIds holds \(id.debugDescription)")
    }
    if let execution = envelope.workflowExecution {
        for time in [execution.createTime] + execution.tasks.flatMap({ [$0.createTime, $0.endTime] }) {
            if let time { checkRoundTrip(time) }
        }
    }
    return 0
}

private func check(_ job: JobsDetail) {
    invariant(!job.jobID.isEmpty, "empty JobId")
    invariant(job.jobID == trimmed(job.jobID), "JobId \(job.jobID.debugDescription) keeps surrounding whitespace")
    invariant(!job.state.rawValue.isEmpty, "empty State")
    invariant(job.state.rawValue == trimmed(job.state.rawValue), "State \(job.state.rawValue.debugDescription) keeps surrounding whitespace")
    invariant(!containsNUL(job.normalized), "JobsDetail \(job.jobID.debugDescription) holds U+0000")

    let stored = CINodeJSON.encode(job.normalized)
    let readBack: CINode
    do {
        readBack = try CINodeJSON.decode(Array(stored.utf8))
    } catch {
        invariant(false, "stored JSON of \(job.jobID.debugDescription) does not read back: \(error)")
        return
    }
    let storedAgain = CINodeJSON.encode(readBack)
    invariant(storedAgain == stored, "stored JSON is not stable: \(stored) became \(storedAgain)")

    let lookupXML = CINodeXML.encode(.element([CIField(name: "JobsDetail", value: readBack)]), rootName: "Response")
    do {
        _ = try CINodeXML.decode(Array(lookupXML.utf8))
    } catch {
        invariant(false, "XML lookup rendering of \(job.jobID.debugDescription) does not parse: \(error)")
    }

    for time in [job.creationTime, job.startTime, job.endTime] {
        if let time { checkRoundTrip(time) }
    }
}

private func checkRoundTrip(_ time: CITimestamp) {
    let text = time.rfc3339
    let again = CITimestamp(ciText: text)
    invariant(again == time, "\(text) parsed back as \(again.map(\.rfc3339) ?? "nil")")
}

private func containsNUL(_ node: CINode) -> Bool {
    switch node {
    case .text(let text):
        return text.utf8.contains(0)
    case .element(let fields):
        return fields.contains { $0.name.utf8.contains(0) || containsNUL($0.value) }
    }
}

private func trimmed(_ text: String) -> String {
    let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
    let bytes = Array(text.utf8)
    guard let first = bytes.firstIndex(where: { !space.contains($0) }) else { return "" }
    let last = bytes.lastIndex(where: { !space.contains($0) })!
    return String(decoding: bytes[first...last], as: UTF8.self)
}
