#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COSSigning

/// Who may call what.
///
/// CI signs nothing, so the callback URL itself is the credential: a token in its path or query.
/// Lookups take bearer tokens. Several tokens may be valid at once, so one can be rotated without
/// downtime: add the new one, move the callers, remove the old one.
public struct AccessPolicy: Sendable {
    /// Valid callback tokens; empty means callbacks need no token.
    public var callbackTokens: [String]
    /// Valid bearer tokens for `/v1/jobs…` and other API routes; empty means the API is open.
    public var apiTokens: [String]
    /// Addresses callbacks may come from; empty means anywhere.
    public var callbackAllowList: [IPAddressRange]
    /// Proxies whose `X-Forwarded-For` is believed.
    public var trustedProxies: [IPAddressRange]

    public init(
        callbackTokens: [String] = [], apiTokens: [String] = [], callbackAllowList: [IPAddressRange] = [],
        trustedProxies: [IPAddressRange] = []
    ) {
        self.callbackTokens = callbackTokens.filter { !$0.isEmpty }
        self.apiTokens = apiTokens.filter { !$0.isEmpty }
        self.callbackAllowList = callbackAllowList
        self.trustedProxies = trustedProxies
    }

    /// Whether `token` is one of `callbackTokens` (always true when none are configured).
    public func acceptsCallbackToken(_ token: String?) -> Bool {
        callbackTokens.isEmpty || Self.matchesAny(token, callbackTokens)
    }

    /// Whether an `Authorization` header carries one of `apiTokens` (always true when none are configured).
    public func acceptsAPIAuthorization(_ header: String?) -> Bool {
        guard !apiTokens.isEmpty else { return true }
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        return Self.matchesAny(String(header.dropFirst(7)).trimmingSpaces, apiTokens)
    }

    /// The caller's address: the socket peer, or, when the peer is a trusted proxy, the nearest address
    /// in `X-Forwarded-For` that is not itself a trusted proxy (the rightmost one a client cannot forge).
    public func clientAddress(peer: String, forwardedFor: [String]) -> String {
        guard !trustedProxies.isEmpty, let peerAddress = IPAddress(peer), trustedProxies.contains(where: { $0.contains(peerAddress) })
        else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
        for hop in hops.reversed() {
            guard let address = IPAddress(hop) else { return hop }
            if !trustedProxies.contains(where: { $0.contains(address) }) { return hop }
        }
        return hops.first ?? peer
    }

    /// Whether the caller reached the service over TLS: only a trusted proxy's `X-Forwarded-Proto` says so
    /// (the service itself speaks plain HTTP), taking the proxy's own entry, the rightmost.
    public func cameOverTLS(peer: String, forwardedProto: [String]) -> Bool {
        guard !trustedProxies.isEmpty, let peerAddress = IPAddress(peer), trustedProxies.contains(where: { $0.contains(peerAddress) })
        else { return false }
        let protos = forwardedProto.flatMap { $0.split(separator: ",") }.map { String($0).trimmingSpaces.lowercased() }
        return protos.last == "https"
    }

    /// The API token `candidate` equals, compared with every token in constant time; nil when none.
    public func matchingAPIToken(_ candidate: String) -> String? {
        let candidateBytes = Array(candidate.utf8)
        var matched: String?
        for token in apiTokens where Digest.constantTimeEqual(candidateBytes, Array(token.utf8)) {
            matched = token
        }
        return matched
    }

    /// Whether callbacks from `address` are allowed.
    public func allowsCallback(from address: String) -> Bool {
        guard !callbackAllowList.isEmpty else { return true }
        guard let parsed = IPAddress(address) else { return false }
        return callbackAllowList.contains { $0.contains(parsed) }
    }

    /// Compares `candidate` with every token without stopping early, and each comparison takes the same
    /// time whatever the contents, so response timing does not reveal how much of a token was right.
    static func matchesAny(_ candidate: String?, _ tokens: [String]) -> Bool {
        let candidateBytes = Array((candidate ?? "").utf8)
        var matched = false
        for token in tokens {
            matched = Digest.constantTimeEqual(candidateBytes, Array(token.utf8)) || matched
        }
        return candidate != nil && matched
    }
}

/// An IPv4 or IPv6 address as 16 bytes (IPv4 as an IPv4-mapped IPv6 address, so `10.0.0.1` and
/// `::ffff:10.0.0.1` are the same).
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]
    public let description: String

    public init?(_ text: String) {
        var text = text
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        if let percent = text.firstIndex(of: "%") { text = String(text[..<percent]) }  // zone index
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            let raw = withUnsafeBytes(of: &v4) { Array($0) }
            bytes = Array(repeating: 0, count: 10) + [0xFF, 0xFF] + raw
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
        description = text
    }
}

/// A CIDR block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a single-address block.
public struct IPAddressRange: Sendable, Hashable, CustomStringConvertible {
    public var network: IPAddress
    /// Prefix length over the 128-bit form (an IPv4 /8 is /104 here).
    public var prefixLength: Int
    public let description: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(String(parts[0])) else { return nil }
        let isIPv4 = String(parts[0]).contains(".") && !String(parts[0]).contains(":")
        let maximum = isIPv4 ? 32 : 128
        var length = maximum
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...maximum).contains(given) else { return nil }
            length = given
        }
        network = address
        prefixLength = isIPv4 ? 96 + length : length
        description = text
    }

    public func contains(_ address: IPAddress) -> Bool {
        var remaining = prefixLength
        for index in 0..<16 where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if address.bytes[index] & mask != network.bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// Parses a comma-separated list; nil names the first entry that is not a CIDR block.
    public static func parseList(_ text: String) -> Result<[IPAddressRange], InvalidRange> {
        var ranges: [IPAddressRange] = []
        for entry in text.split(separator: ",").map({ String($0).trimmingSpaces }) where !entry.isEmpty {
            guard let range = IPAddressRange(entry) else { return .failure(InvalidRange(entry: entry)) }
            ranges.append(range)
        }
        return .success(ranges)
    }

    public struct InvalidRange: Error, Sendable, Hashable {
        public var entry: String
    }
}

extension String {
    var trimmingSpaces: String {
        var view = Substring(self)
        while view.first == " " || view.first == "\t" { view = view.dropFirst() }
        while view.last == " " || view.last == "\t" { view = view.dropLast() }
        return String(view)
    }
}
