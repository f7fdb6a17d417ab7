import CIModel
import Glibc

// decoder-memory SHAPE BYTES MODE
//
// Builds a body of SHAPE (about BYTES long) and, in MODE `decode`, decodes it with CallbackDecoder and
// renders each job's stored detail (CINodeJSON), holding the results; in MODE `baseline` it only builds
// the body. It prints one line of JSON: the body's size, how much the resident memory grew while
// decoding with the results still held (/proc/self/statm, so freed-but-kept pages count too), and the
// process's peak RSS (getrusage). Benchmarks/decoder-memory runs it in fresh processes.

func heapInUse() -> Int {
    // Resident pages (statm's second field) in bytes: what the decoded envelope costs the process.
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 128)
    guard fgets(&line, Int32(line.count), file) != nil else { return 0 }
    let fields = String(cString: line).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

func peakRSS() -> Int {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_maxrss * 1024
}

func body(shape: String, bytes: Int) -> [UInt8] {
    let jobID = "j0123456789abcdef0123456789abcdef"
    func repeated(_ head: String, _ unit: String, _ tail: String, separator: String = "") -> [UInt8] {
        let count = max(1, (bytes - head.utf8.count - tail.utf8.count) / (unit.utf8.count + separator.utf8.count))
        var out = Array(head.utf8)
        out.reserveCapacity(bytes + unit.utf8.count)
        for index in 0..<count {
            if index > 0 { out.append(contentsOf: separator.utf8) }
            out.append(contentsOf: unit.utf8)
        }
        out.append(contentsOf: tail.utf8)
        return out
    }
    switch shape {
    case "json-long-string":
        return repeated(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Operation":{"ExtractDigitalWatermark":{"Message":""#, "w", #""}}}}"#)
    case "json-escaped-string":
        return repeated(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Message":""#, #"\u4e2d\n"#, #""}}"#)
    case "json-many-elements":
        return repeated(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Extra":["#, #""abcdefghi""#, "]}}", separator: ",")
    case "json-many-jobs":
        var index = 0
        var out = Array(#"{"JobsDetail":["#.utf8)
        while out.count < bytes - 80 {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: #"{"JobId":"\#(jobID)-\#(index)","State":"Success"}"#.utf8)
            index += 1
        }
        out.append(contentsOf: "]}".utf8)
        return out
    case "json-deep-nesting":
        let unit = String(repeating: #"{"nnnnnn":"#, count: 60) + "1" + String(repeating: "}", count: 60)
        return repeated(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Extra":["#, unit, "]}}", separator: ",")
    case "xml-long-text":
        return repeated("<Response><JobsDetail><JobId>\(jobID)</JobId><State>Success</State><Message>", "w", "</Message></JobsDetail></Response>")
    case "xml-many-elements":
        return repeated("<Response><JobsDetail><JobId>\(jobID)</JobId><State>Success</State><Extra>", "<ab>123</ab>", "</Extra></JobsDetail></Response>")
    case "xml-deep-nesting":
        let unit = (0..<60).map { "<n\($0)>" }.joined() + "x" + (0..<60).reversed().map { "</n\($0)>" }.joined()
        return repeated("<Response><JobsDetail><JobId>\(jobID)</JobId><State>Success</State>", unit, "</JobsDetail></Response>")
    default:
        fatalError("unknown shape \(shape)")
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 4, let bytes = Int(arguments[2]) else {
    fatalError("usage: decoder-memory SHAPE BYTES decode|baseline")
}
let input = body(shape: arguments[1], bytes: bytes)
let before = heapInUse()
var held = 0
var details: [String] = []
if arguments[3] == "decode" {
    do {
        let envelope = try CallbackDecoder.decodeCallback(input)
        details = envelope.jobs.map { CINodeJSON.encode($0.normalized) }
        held = heapInUse() - before
        withExtendedLifetime(envelope) {}
    } catch {
        print(#"{"error":"\#(error.reason)"}"#)
        exit(1)
    }
}
print(#"{"body_bytes":\#(input.count),"held_bytes":\#(held),"peak_rss":\#(peakRSS()),"detail_bytes":\#(details.reduce(0) { $0 + $1.utf8.count })}"#)
