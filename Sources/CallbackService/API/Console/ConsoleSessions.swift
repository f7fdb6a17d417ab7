import COSSigning
import Foundation

/// Console sessions: a signed cookie, no server-side table.
///
/// A session cookie is `expiry.nonce.mac`, where the MAC is HMAC-SHA256 of the expiry and nonce under the
/// API token the operator logged in with. So any replica can check it, a session ends when it expires or
/// when its token is removed from `API_TOKENS` (rotation logs everyone out who used the old token), and
/// the cookie never holds the token itself. Logging out clears the cookie; a copied cookie stays valid
/// until it expires, which the lifetime bounds.
struct ConsoleSessions: Sendable {
    /// The API tokens; empty means the console is open and sessions are not used.
    let tokens: [String]
    /// How long a session lasts from login.
    let lifetime: Duration

    static let sessionCookie = "ci_console_session"
    static let csrfCookie = "ci_console_csrf"

    var required: Bool { !tokens.isEmpty }

    /// A new session value for the operator who presented `token` (already checked), valid until `now + lifetime`.
    func issue(for token: String, now: Date) -> String {
        let expiry = Int64(now.timeIntervalSince1970) + lifetime.components.seconds
        let payload = "\(expiry).\(Self.randomHex(16))"
        return payload + "." + Hex.encode(Self.mac(payload, key: token))
    }

    /// Whether `value` is a session issued under one of the current tokens and not yet expired.
    ///
    /// Every token's MAC is computed and compared in constant time, with no early exit, as AccessPolicy
    /// compares tokens.
    func isValid(_ value: String?, now: Date) -> Bool {
        guard let value else { return false }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let expiry = Int64(parts[0]), let presented = Hex.decode(parts[2]) else { return false }
        let payload = parts[0] + "." + parts[1]
        var matched = false
        for token in tokens {
            matched = Digest.constantTimeEqual(presented, Self.mac(String(payload), key: token)) || matched
        }
        return matched && Int64(now.timeIntervalSince1970) < expiry
    }

    private static func mac(_ payload: String, key: String) -> [UInt8] {
        Digest.hmacSHA256(key: Array(key.utf8), message: Array(("ci-callbackd console session\u{0}" + payload).utf8))
    }

    /// `count` random bytes as hex, from the system generator (getrandom).
    static func randomHex(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return Hex.encode((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// The cookies of a `Cookie` header, by name (the first of a repeated name).
    static func cookies(_ headers: [String]) -> [String: String] {
        var cookies: [String: String] = [:]
        for header in headers {
            for pair in header.split(separator: ";") {
                guard let equals = pair.firstIndex(of: "=") else { continue }
                let name = pair[..<equals].trimmingCharacters(in: .whitespaces)
                let value = pair[pair.index(after: equals)...].trimmingCharacters(in: .whitespaces)
                if cookies[name] == nil { cookies[name] = value }
            }
        }
        return cookies
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Strict, scoped to the console; `Secure` when the operator
    /// reached the service over TLS.
    static func setCookie(_ name: String, _ value: String, maxAge: Int64, secure: Bool) -> String {
        "\(name)=\(value); Path=/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }
}

/// CSRF protection for the console's forms: a double-submit token.
///
/// A random token lives in an HttpOnly, SameSite=Strict cookie and is copied into every form as a hidden
/// field; a POST is refused unless both are present and equal. A cross-site form cannot read the cookie
/// to copy it, and with SameSite=Strict the browser does not even send the cookie with a cross-site POST.
/// An `Origin` header naming a site, when present, must also name this host.
enum ConsoleCSRF {
    static let field = "csrf"

    /// Whether a POST with these cookies, form fields and headers carries a valid token.
    static func accepts(cookie: String?, field: String?, origin: String?, host: String?) -> Bool {
        guard let cookie, let field, cookie.utf8.count == 64 else { return false }
        // scheme://host[:port]; the Host header carries host[:port]. Browsers send `Origin: null` for the
        // console's own forms, since its pages say `Referrer-Policy: no-referrer`: then the token decides.
        if let origin, origin != "null" {
            guard let host, let schemeEnd = origin.range(of: "://"), origin[schemeEnd.upperBound...] == host else { return false }
        }
        return Digest.constantTimeEqual(Array(field.utf8), Array(cookie.utf8))
    }
}
