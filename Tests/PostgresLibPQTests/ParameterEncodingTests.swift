import Testing

@testable import PostgresLibPQ

/// How binds are laid out for libpq, without a server: the binary `bytea[]` (PostgreSQL's `array_recv`
/// format), the quoted `text[]` literal, and each parameter's type, format and length.
@Suite("Parameter encoding")
struct ParameterEncodingTests {
    private static func int32(_ value: Int32) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }

    @Test func byteaArray_isOneDimensionalArrayRecvFormat_withLengthPrefixedElements() throws {
        let bytes = try #require(PostgresValue.binaryByteaArray([[1, 2], [], [0]]))
        let header = Self.int32(1) + Self.int32(0) + Self.int32(17) + Self.int32(3) + Self.int32(1)
        let elements = Self.int32(2) + [1, 2] + Self.int32(0) + Self.int32(1) + [0]
        #expect(bytes == header + elements, "ndim, no NULLs, element type bytea, length 3, lower bound 1; an empty or NUL element is plain data")
    }

    @Test func byteaArray_empty_hasNoDimensions() {
        #expect(PostgresValue.binaryByteaArray([]) == Self.int32(0) + Self.int32(0) + Self.int32(17))
    }

    @Test func textArray_quotesEveryElement_soDelimitersAndNULLStayData() {
        let literal = PostgresValue.arrayLiteral(["a", "", "NULL", "x,y", #"q"b\s"#, "{}", " sp ", "ü"])
        #expect(literal == #"{"a","","NULL","x,y","q\"b\\s","{}"," sp ","ü"}"#)
        #expect(PostgresValue.arrayLiteral([]) == "{}")
    }

    @Test func integerArray_isAnArrayLiteral_nilAsNULL_emptyAsEmpty() {
        #expect(PostgresValue.integerArray([Int64(1), -2, .max]) == .text("{1,-2,9223372036854775807}"))
        #expect(PostgresValue.integerArray([Int64(0), .min, 1_796_527_063_206_123, -10]) == .text("{0,-9223372036854775808,1796527063206123,-10}"))
        #expect(PostgresValue.integerArray([Int64(200), nil, 503]) == .text("{200,NULL,503}"))
        #expect(PostgresValue.integerArray([Int64]()) == .text("{}"))
    }

    @Test func parameters_carryTypeFormatAndLengthPerBind() throws {
        let encoded = try EncodedParameters(
            [.null, .text("xy"), .bytea([0, 1]), .textArray(["a"]), .byteaArray([[7]])], operation: "test")
        #expect(encoded.count == 5)
        #expect(encoded.types == [0, 0, 17, 1009, 1001], "text is untyped so the server infers it; arrays name their type")
        let (isNull, lengths, formats) = encoded.withPointers { values, lengths, formats in
            ((0..<5).map { values![$0] == nil }, (0..<5).map { lengths![$0] }, (0..<5).map { formats![$0] })
        }
        #expect(isNull == [true, false, false, false, false], "only SQL NULL is a NULL pointer")
        #expect(formats == [0, 0, 1, 0, 1], "bytea and bytea[] binary, the rest text")
        #expect(lengths == [0, 2, 2, 5, Int32(PostgresValue.binaryByteaArray([[7]])!.count)])
    }

    @Test func parameters_textWithoutNUL_isEncodedAsIs() throws {
        for text in ["", "a", String(repeating: "é", count: 3000)] {
            let encoded = try EncodedParameters([.text(text)], operation: "test")
            #expect(encoded.withPointers { values, lengths, _ in String(cString: values![0]!) == text && lengths![0] == Int32(text.utf8.count) })
        }
    }

    @Test func parameters_emptyBytea_isNotNull() throws {
        let encoded = try EncodedParameters([.bytea([])], operation: "test")
        #expect(encoded.withPointers { values, lengths, _ in values![0] != nil && lengths![0] == 0 })
    }

    @Test func parameters_textWithNUL_isRefusedBeforeReachingTheServer() {
        let long = String(repeating: "x", count: 5000)
        for bind in [
            PostgresValue.text("a\u{0}b"), .text("\u{0}"), .text(long + "\u{0}"), .text("\u{0}" + long), .textArray(["ok", "a\u{0}b"]),
        ] {
            do {
                _ = try EncodedParameters([bind], operation: "test")
                Issue.record("\(bind) was encoded")
            } catch {
                #expect(error.code == .queryFailed && error.sqlState == "22021")
            }
        }
    }
}

/// The pool's wait queue: first come, first served, and a cancelled or timed-out job leaves from anywhere.
@Suite("Pool job queue")
struct JobQueueTests {
    private static func job(_ id: UInt64) -> PoolJob {
        let now = ContinuousClock.now
        return PoolJob(
            id: id, enqueuedAt: now, deadline: now.advanced(by: .seconds(1)),
            execute: { _ in PoolJob.Outcome(failure: nil, deliver: {}) }, fail: { _ in })
    }

    private static func job(_ id: UInt64, deadline: ContinuousClock.Instant) -> PoolJob {
        PoolJob(
            id: id, enqueuedAt: deadline.advanced(by: .seconds(-5)), deadline: deadline,
            execute: { _ in PoolJob.Outcome(failure: nil, deliver: {}) }, fail: { _ in })
    }

    @Test func timerStep_EmptyQueue_WaitsForWorkUntilClosedThenExits() {
        let queue = JobQueue()
        let now = ContinuousClock.now
        #expect(queue.timerStep(now: now, isClosed: false) == .waitForWork)
        #expect(queue.timerStep(now: now, isClosed: true) == .exit)
    }

    @Test func timerStep_HeadDeadlineAhead_SleepsUntilIt_ThenExpiresTheHead() {
        let start = ContinuousClock.now
        var queue = JobQueue()
        queue.append(Self.job(1, deadline: start.advanced(by: .seconds(5))))
        queue.append(Self.job(2, deadline: start.advanced(by: .seconds(6))))
        #expect(queue.timerStep(now: start, isClosed: false) == .waitUntil(start.advanced(by: .seconds(5))))
        #expect(queue.timerStep(now: start.advanced(by: .seconds(5)), isClosed: false) == .expireHead, "a deadline reached is expired")
        _ = queue.popFirst()
        #expect(queue.timerStep(now: start.advanced(by: .seconds(5)), isClosed: false) == .waitUntil(start.advanced(by: .seconds(6))))
    }

    @Test func timerStep_ClosedPoolWithQueuedJobs_KeepsTimingThemOut() {
        let start = ContinuousClock.now
        var queue = JobQueue()
        queue.append(Self.job(1, deadline: start.advanced(by: .seconds(1))))
        #expect(queue.timerStep(now: start, isClosed: true) == .waitUntil(start.advanced(by: .seconds(1))))
        #expect(queue.timerStep(now: start.advanced(by: .seconds(2)), isClosed: true) == .expireHead)
    }

    @Test func jobQueue_popsInArrivalOrder() {
        var queue = JobQueue()
        for id in 1...3 { queue.append(Self.job(UInt64(id))) }
        #expect(queue.first?.id == 1)
        #expect([queue.popFirst(), queue.popFirst(), queue.popFirst(), queue.popFirst()].map { $0?.id } == [1, 2, 3, nil])
        #expect(queue.isEmpty)
    }

    @Test func jobQueue_removeByID_takesOnlyThatJob_andNeverAPoppedOne() {
        var queue = JobQueue()
        for id in 1...4 { queue.append(Self.job(UInt64(id))) }
        _ = queue.popFirst()
        #expect(queue.remove(id: 1) == nil, "already handed to a connection thread")
        #expect(queue.remove(id: 3)?.id == 3)
        #expect(queue.remove(id: 3) == nil)
        #expect(queue.count == 2)
        #expect([queue.popFirst(), queue.popFirst()].map { $0?.id } == [2, 4])
    }

    @Test func jobQueue_longRunOfPops_compactsWithoutLosingOrder() {
        var queue = JobQueue()
        var next: UInt64 = 0
        var expected: UInt64 = 0
        for round in 0..<50 {
            for _ in 0..<(round % 7 + 3) {
                next += 1
                queue.append(Self.job(next))
            }
            for _ in 0..<(round % 5 + 2) {
                guard let job = queue.popFirst() else { break }
                expected += 1
                #expect(job.id == expected)
            }
        }
        #expect(queue.count == Int(next - expected))
        while let job = queue.popFirst() {
            expected += 1
            #expect(job.id == expected)
        }
        #expect(expected == next)
    }
}
