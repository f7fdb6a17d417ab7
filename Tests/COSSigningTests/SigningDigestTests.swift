import COSSigning
import Testing

@Suite struct SigningDigestTests {
    @Test func digest_SHA1MatchesFIPS180ABCVector() {
        #expect(Hex.encode(Digest.sha1("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
    }

    @Test func digest_SHA1OfEmptyInput() {
        #expect(Hex.encode(Digest.sha1([UInt8]())) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
    }

    @Test func digest_SHA1OfNonContiguousSequenceEqualsContiguous() {
        let bytes = Array("The quick brown fox jumps over the lazy dog".utf8)
        #expect(Hex.encode(Digest.sha1(AnySequence(bytes))) == "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12")
        #expect(Digest.sha1(AnySequence(bytes)) == Digest.sha1(bytes))
    }

    @Test func digest_SHA256MatchesFIPS180ABCVector() {
        #expect(Hex.encode(Digest.sha256("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func digest_HMACSHA1MatchesRFC2202Case1() {
        let tag = Digest.hmacSHA1(key: [UInt8](repeating: 0x0B, count: 20), message: Array("Hi There".utf8))
        #expect(Hex.encode(tag) == "b617318655057264e28bc0b6fb378c8ef146be00")
    }

    @Test func digest_HMACSHA1MatchesRFC2202Case2() {
        let tag = Digest.hmacSHA1(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(Hex.encode(tag) == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    }

    @Test func digest_HMACSHA1HashesKeyLongerThanBlockSize() {
        let tag = Digest.hmacSHA1(
            key: [UInt8](repeating: 0xAA, count: 80),
            message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)
        )
        #expect(Hex.encode(tag) == "aa4ae5e15272d00e95705637ce8a3b55ed402112")
    }

    @Test func digest_HMACSHA1AcceptsEmptyKeyAndMessage() {
        #expect(Hex.encode(Digest.hmacSHA1(key: [], message: [])) == "fbdb1d1b18aa6c08324b7d64b71fb76370690e1d")
    }

    @Test func hex_EncodesLowercaseTwoDigitsPerByte() {
        #expect(Hex.encode([0x00, 0x0F, 0xA0, 0xFF]) == "000fa0ff")
        #expect(Hex.encode([UInt8]()) == "")
    }

    @Test func hex_DecodesEitherCase() {
        #expect(Hex.decode("000fa0ff") == [0x00, 0x0F, 0xA0, 0xFF])
        #expect(Hex.decode("000FA0FF") == [0x00, 0x0F, 0xA0, 0xFF])
        #expect(Hex.decode("") == [])
    }

    @Test(arguments: ["abc", "0g", "zz", " 0", "0x12"])
    func hex_DecodeRejectsOddLengthOrNonHex(_ text: String) {
        #expect(Hex.decode(text) == nil)
    }
}
