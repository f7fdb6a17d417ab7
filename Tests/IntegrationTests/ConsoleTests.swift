import CallbackService
import Foundation
import PostgresLibPQ
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The operator console through the real listener: headers, escaping, sign-in and CSRF.
@Suite("Console")
struct ConsoleTests {
    static let hostile = "<img src=x onerror=alert(1)>"

    static func watermarkCallback(_ jobID: String, userData: String = hostile, message: String = "<script>alert(2)</script>wm") -> [UInt8] {
        let detail: [String: Any] = [
            "JobsDetail": [
                "JobId": jobID, "State": "Success", "Tag": "ExtractDigitalWatermark",
                "Operation": ["UserData": userData, "ExtractDigitalWatermark": ["Type": "Text", "Version": "V1", "Message": message]],
            ] as [String: Any]
        ]
        return Array(try! JSONSerialization.data(withJSONObject: detail, options: [.sortedKeys]))
    }

    @Test func console_everyResponse_carriesStrictSecurityHeaders() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let stored = try await service.post("/v1/callbacks", Self.watermarkCallback(jobID))
            let callbackID = try #require(try stored.json()["CallbackId"] as? Int)
            let client = ConsoleClient(service)
            for path in [
                "/console/", "/console/jobs", "/console/jobs/\(jobID)", "/console/rejected", "/console/callbacks/\(callbackID)",
                "/console/callbacks/\(callbackID)/raw", "/console/assets/console.css", "/console/assets/console.js", "/console/nowhere",
                "/console/search?q=\(jobID.prefix(10))",
            ] {
                let reply = try await client.send("GET", path)
                #expect([200, 303, 404].contains(reply.status), "\(path): \(reply.status)")
                let csp = try #require(reply.header("Content-Security-Policy"), "\(path) has no CSP")
                for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
                    #expect(csp.contains(directive), "\(path): \(csp)")
                }
                #expect(!csp.contains("unsafe-inline"))
                #expect(reply.header("X-Frame-Options") == "DENY", "\(path)")
                #expect(reply.header("X-Content-Type-Options") == "nosniff", "\(path)")
                #expect(reply.header("Referrer-Policy") == "no-referrer", "\(path)")
            }
            let page = try await client.send("GET", "/console/jobs/\(jobID)")
            #expect(!page.text.contains("<script>") && !page.text.contains(" style="), "no inline script or style")
            #expect(page.text.contains(#"<script src="/console/assets/console.js" defer></script>"#))
        }
    }

    @Test func console_hostileCallbackText_isShownLiterally_everywhere() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = Self.watermarkCallback(jobID)
            let stored = try await service.post("/v1/callbacks", body)
            let callbackID = try #require(try stored.json()["CallbackId"] as? Int)
            let rejected = try await service.post("/v1/callbacks", Array(#"{"JobsDetail":{"State":"<svg onload=alert(3)>"}}"#.utf8))
            #expect(rejected.status == 400)
            let client = ConsoleClient(service)

            let detail = try await client.send("GET", "/console/jobs/\(jobID)")
            #expect(detail.status == 200)
            #expect(detail.text.contains("&lt;img src=x onerror=alert(1)&gt;"), "UserData appears literally")
            #expect(detail.text.contains(#"<pre id="watermark-text">&lt;script&gt;alert(2)&lt;/script&gt;wm</pre>"#), "watermark first, escaped")
            #expect(!detail.text.contains("<img"), "no img element")
            #expect(detail.text.firstRange(of: "watermark-text")!.lowerBound < detail.text.firstRange(of: "Receipt")!.lowerBound)

            let callback = try await client.send("GET", "/console/callbacks/\(callbackID)")
            #expect(callback.text.contains("&lt;img src=x onerror=alert(1)&gt;") && !callback.text.contains("<img"))
            let list = try await client.send("GET", "/console/rejected")
            #expect(list.text.contains("&lt;svg onload=alert(3)&gt;") && !list.text.contains("<svg onload"))
            let filtered = try await client.send("GET", "/console/rejected?reason=%3Cb%3E")
            #expect(filtered.status == 200 && filtered.text.contains(#"value="&lt;b&gt;""#))

            let raw = try await client.send("GET", "/console/callbacks/\(callbackID)/raw")
            #expect(raw.status == 200)
            #expect(Array(raw.body) == body, "downloaded byte for byte")
            #expect(raw.header("Content-Type") == "application/json; charset=utf-8")
            #expect(raw.header("Content-Disposition") == #"attachment; filename="callback-\#(callbackID).json""#)
        }
    }

    @Test func console_jobList_filtersAndPages_withTheAPIsQueries() async throws {
        try await ServiceHarness.with { service in
            for _ in 0..<3 {
                _ = try await service.post("/v1/callbacks", Self.watermarkCallback(RequestIDForTests.jobID()))
            }
            let client = ConsoleClient(service)
            let first = try await client.send("GET", "/console/jobs?state=Success&tag=&queueId=&since=&until=&limit=2")
            #expect(first.status == 200)
            #expect(first.text.components(separatedBy: #"<td class="id""#).count - 1 == 2)
            let next = try #require(first.text.firstMatch(of: /href="(\/console\/jobs\?[^"]*cursor=[^"]*)" rel="next"/)?.1)
            let second = try await client.send("GET", String(next).replacingOccurrences(of: "&amp;", with: "&"))
            #expect(second.status == 200)
            #expect(second.text.components(separatedBy: #"<td class="id""#).count - 1 == 1)
            let bad = try await client.send("GET", "/console/jobs?state=Nope")
            #expect(bad.status == 400 && bad.text.contains("is not one of"))
        }
    }

    @Test func console_search_exactJobId_orUniquePrefix_redirectsToTheJob_andListsAmbiguousPrefixes() async throws {
        try await ServiceHarness.with { service in
            let stem = "jprefix" + RequestIDForTests.random()
            for suffix in ["a1", "a2", "b1"] {
                _ = try await service.post("/v1/callbacks", Self.watermarkCallback(stem + suffix))
            }
            let client = ConsoleClient(service)
            let exact = try await client.send("GET", "/console/search?q=\(stem)a1")
            #expect(exact.status == 303 && exact.header("Location") == "/console/jobs/\(stem)a1")
            let unique = try await client.send("GET", "/console/search?q=\(stem)b")
            #expect(unique.status == 303 && unique.header("Location") == "/console/jobs/\(stem)b1")
            let ambiguous = try await client.send("GET", "/console/search?q=\(stem)a")
            #expect(ambiguous.status == 200)
            #expect(ambiguous.text.contains("\(stem)a1") && ambiguous.text.contains("\(stem)a2") && !ambiguous.text.contains("\(stem)b1"))
            let none = try await client.send("GET", "/console/search?q=zz\(stem)")
            #expect(none.status == 200 && none.text.contains("No job has a JobId that starts with this."))
        }
    }

    @Test func console_withAPITokens_needsALogin_whoseSessionCookieIsStrict() async throws {
        let policy = AccessPolicy(apiTokens: ["reader-1", "reader-2"], trustedProxies: [IPAddressRange("127.0.0.1/32")!])
        try await ServiceHarness.with(accessPolicy: policy) { service in
            let client = ConsoleClient(service)
            let anonymous = try await client.send("GET", "/console/jobs")
            #expect(anonymous.status == 303 && anonymous.header("Location") == "/console/login")
            let form = try await client.send("GET", "/console/login")
            #expect(form.status == 200 && form.text.contains(#"type="password""#))
            let csrf = try #require(client.cookies["ci_console_csrf"])
            #expect(form.text.contains(#"name="csrf" value="\#(csrf)""#))

            let wrong = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-1x"])
            #expect(wrong.status == 401 && client.cookies["ci_console_session"] == nil)
            let right = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-2"])
            #expect(right.status == 303 && right.header("Location") == "/console/")
            let setCookie = try #require(right.setCookies.first { $0.hasPrefix("ci_console_session=") })
            #expect(setCookie.contains("; HttpOnly") && setCookie.contains("; SameSite=Strict") && setCookie.contains("; Path=/console"))
            #expect(!setCookie.contains("Secure"), "plain HTTP from a client, not a proxy saying https")
            #expect(try await client.send("GET", "/console/jobs").status == 200)

            // A tampered session is no session.
            let session = try #require(client.cookies["ci_console_session"])
            client.cookies["ci_console_session"] = String(session.dropLast()) + (session.hasSuffix("0") ? "1" : "0")
            #expect(try await client.send("GET", "/console/jobs").status == 303)

            // Over TLS per the trusted proxy, the cookie is Secure.
            let tls = try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-1"], headers: ["X-Forwarded-Proto": "https"])
            #expect(tls.setCookies.contains { $0.hasPrefix("ci_console_session=") && $0.hasSuffix("; Secure") })

            let logout = try await client.send("POST", "/console/logout", form: ["csrf": csrf])
            #expect(logout.status == 303 && logout.setCookies.contains { $0.hasPrefix("ci_console_session=;") && $0.contains("Max-Age=0") })
            #expect(try await client.send("GET", "/console/").status == 303)
        }
    }

    @Test func console_postsWithoutTheCSRFToken_areRefused() async throws {
        try await ServiceHarness.with(accessPolicy: AccessPolicy(apiTokens: ["reader-1"])) { service in
            let client = ConsoleClient(service)
            _ = try await client.send("GET", "/console/login")
            let csrf = try #require(client.cookies["ci_console_csrf"])
            let missing = try await client.send("POST", "/console/login", form: ["token": "reader-1"])
            let other = try await client.send("POST", "/console/login", form: ["csrf": String(repeating: "0", count: 64), "token": "reader-1"])
            let crossSite = try await client.send(
                "POST", "/console/login", form: ["csrf": csrf, "token": "reader-1"], headers: ["Origin": "https://attacker.example"])
            let noCookie = ConsoleClient(service)
            let forged = try await noCookie.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-1"])
            for refused in [missing, other, crossSite, forged] {
                #expect(refused.status == 403)
                #expect(refused.text.contains("CSRF"))
                #expect(!refused.setCookies.contains { $0.hasPrefix("ci_console_session=") })
            }
            #expect(try await client.send("POST", "/console/login", form: ["csrf": csrf, "token": "reader-1"]).status == 303)
        }
    }

    @Test func console_withoutAPITokens_isOpen_andHasNoLogin() async throws {
        try await ServiceHarness.with { service in
            let client = ConsoleClient(service)
            let overview = try await client.send("GET", "/console/")
            #expect(overview.status == 200)
            #expect(overview.text.contains("<svg class=\"chart\"") && overview.text.contains("Open jobs"))
            #expect(!overview.text.contains("Log out"))
            #expect(try await client.send("GET", "/console/login").header("Location") == "/console/")
            #expect(try await client.send("GET", "/console").header("Location") == "/console/")
        }
    }
}

/// An HTTP client for console tests: keeps its own cookies (so each test is one browser), never follows
/// redirects (tests look at them), over URLSession and real sockets.
final class ConsoleClient: @unchecked Sendable {
    struct Reply {
        var status: Int
        var headers: [(String, String)]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.caseInsensitiveCompare(name) == .orderedSame }?.1 }
        var setCookies: [String] {
            headers.filter { $0.0.caseInsensitiveCompare("Set-Cookie") == .orderedSame }.flatMap { Self.splitSetCookie($0.1) }
        }
        /// URLSession joins repeated Set-Cookie fields with ", "; no cookie value here contains one.
        static func splitSetCookie(_ value: String) -> [String] {
            value.components(separatedBy: ", ci_console_").enumerated().map { $0.offset == 0 ? $0.element : "ci_console_" + $0.element }
        }
    }

    private final class NoRedirects: NSObject, URLSessionTaskDelegate {
        func urlSession(
            _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse, newRequest request: URLRequest,
            completionHandler: @escaping (URLRequest?) -> Void
        ) {
            completionHandler(nil)
        }
    }

    let service: ServiceHarness
    /// Guarded by being used from one test task at a time.
    var cookies: [String: String] = [:]
    private let session: URLSession

    init(_ service: ServiceHarness) {
        self.service = service
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }

    func send(_ method: String, _ path: String, form: [String: String]? = nil, headers: [String: String] = [:]) async throws -> Reply {
        var request = URLRequest(url: URL(string: service.baseURL + path)!)
        request.httpMethod = method
        request.timeoutInterval = 30
        if !cookies.isEmpty {
            request.setValue(cookies.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: "; "), forHTTPHeaderField: "Cookie")
        }
        if let form {
            request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
            let allowed = CharacterSet.alphanumerics
            request.httpBody = Data(
                form.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&").utf8)
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await session.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        let replyHeaders = http.allHeaderFields.map { ("\($0.key)", "\($0.value)") }
        let reply = Reply(status: http.statusCode, headers: replyHeaders, body: data)
        for cookie in reply.setCookies {
            let pair = cookie.split(separator: ";")[0]
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let name = String(pair[..<equals])
            let value = String(pair[pair.index(after: equals)...])
            if value.isEmpty || cookie.contains("Max-Age=0") { cookies[name] = nil } else { cookies[name] = value }
        }
        return reply
    }
}
