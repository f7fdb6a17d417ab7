import Testing

@testable import CallbackService

@Suite("Access policy")
struct AccessPolicyTests {
    @Test func tokens_matchOnlyWhole_andNilNeverMatches() {
        #expect(!AccessPolicy.matchesAny("ab", ["abc"]))
        #expect(!AccessPolicy.matchesAny("abcd", ["abc"]))
        #expect(!AccessPolicy.matchesAny("", ["a"]))
        #expect(!AccessPolicy.matchesAny(nil, ["a"]))
        #expect(AccessPolicy.matchesAny("b", ["a", "b"]))
    }

    @Test func emptyPolicy_letsEveryoneIn_emptyTokensAreIgnored() {
        let open = AccessPolicy(callbackTokens: [""], apiTokens: [])
        #expect(open.acceptsCallbackToken(nil))
        #expect(open.acceptsAPIAuthorization(nil))
        #expect(open.allowsCallback(from: "203.0.113.1"))
    }

    @Test func bearer_needsTheSchemeAndAKnownToken() {
        let policy = AccessPolicy(apiTokens: ["t1", "t2"])
        #expect(policy.acceptsAPIAuthorization("Bearer t2"))
        #expect(policy.acceptsAPIAuthorization("BEARER t1"))
        #expect(!policy.acceptsAPIAuthorization("t1"))
        #expect(!policy.acceptsAPIAuthorization("Bearer "))
        #expect(!policy.acceptsAPIAuthorization("Bearer t3"))
        #expect(!policy.acceptsAPIAuthorization(nil))
    }

    @Test(arguments: [
        ("10.0.0.0/8", "10.200.1.1", true), ("10.0.0.0/8", "11.0.0.1", false), ("192.168.1.7", "192.168.1.7", true),
        ("192.168.1.7", "192.168.1.8", false), ("0.0.0.0/0", "8.8.8.8", true), ("2001:db8::/32", "2001:db8:1::5", true),
        ("2001:db8::/32", "2001:db9::1", false), ("10.0.0.0/8", "::ffff:10.1.2.3", true), ("::1", "[::1]", true),
        ("fe80::/10", "fe80::1%eth0", true),
    ])
    func cidr_containment(range: String, address: String, expected: Bool) throws {
        let block = try #require(IPAddressRange(range))
        let parsed = try #require(IPAddress(address))
        #expect(block.contains(parsed) == expected)
    }

    @Test func cidr_rejectsNonsense_andListsNameTheBadEntry() {
        for text in ["10.0.0.0/33", "10.0.0/8", "::/129", "example.com", "10.0.0.0/-1", ""] {
            #expect(IPAddressRange(text) == nil, "\(text)")
        }
        #expect(throws: IPAddressRange.InvalidRange(entry: "nope")) { try IPAddressRange.parseList("10.0.0.0/8, nope").get() }
        #expect((try? IPAddressRange.parseList(" 10.0.0.0/8 ,::1 ").get())?.count == 2)
    }

    @Test func clientAddress_usesForwardedForOnlyFromTrustedProxies() throws {
        let policy = AccessPolicy(trustedProxies: [try #require(IPAddressRange("10.0.0.0/8"))])
        #expect(policy.clientAddress(peer: "203.0.113.5", forwardedFor: ["198.51.100.1"]) == "203.0.113.5")
        #expect(policy.clientAddress(peer: "10.0.0.2", forwardedFor: ["198.51.100.1"]) == "198.51.100.1")
        // The client may prepend anything; the rightmost untrusted hop is the one our proxies saw.
        #expect(policy.clientAddress(peer: "10.0.0.2", forwardedFor: ["1.2.3.4, 198.51.100.1, 10.0.0.9"]) == "198.51.100.1")
        #expect(policy.clientAddress(peer: "10.0.0.2", forwardedFor: []) == "10.0.0.2")
    }
}
