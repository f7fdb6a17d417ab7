import COSSigning
import Testing

/// The one comparison for secrets received from outside: AccessPolicy tokens, COS signatures and the
/// console's session MACs all go through it.
@Suite struct ConstantTimeEqualTests {
    @Test func constantTimeEqual_SameBytes_Equal() {
        #expect(Digest.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(Digest.constantTimeEqual([], []))
    }

    @Test func constantTimeEqual_PrefixOrLongerOrDifferentByte_NotEqual() {
        #expect(!Digest.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!Digest.constantTimeEqual(Array("abcd".utf8), Array("abc".utf8)))
        #expect(!Digest.constantTimeEqual(Array("abd".utf8), Array("abc".utf8)))
        #expect(!Digest.constantTimeEqual([], Array("a".utf8)))
        #expect(!Digest.constantTimeEqual(Array("a".utf8), []))
    }

    @Test func constantTimeEqual_SelfComparisonOnLengthMismatch_StillNotEqual() {
        // A presented value that equals itself must not pass just because it is compared with itself.
        let presented = [UInt8](repeating: 0x41, count: 32)
        #expect(!Digest.constantTimeEqual(presented, [UInt8](repeating: 0x41, count: 31)))
    }
}
