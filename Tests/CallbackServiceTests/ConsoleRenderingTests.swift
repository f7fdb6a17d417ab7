import Foundation
import HTTPWire
import Testing

@testable import CallbackService

/// The console's pure parts: escaping, routes, sessions, CSRF and body indentation.
@Suite("Console rendering")
struct ConsoleRenderingTests {
    @Test func html_interpolatedText_isEscaped_literalsAndFragmentsAreNot() {
        let hostile = #"<img src=x onerror=alert(1)> & "quoted" 'single'"#
        let fragment: HTML = "<b>\(hostile)</b>"
        #expect(fragment.text == "<b>&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot; &#39;single&#39;</b>")
        let nested: HTML = "<p>\(fragment)</p>"
        #expect(nested.text == "<p>" + fragment.text + "</p>", "a fragment is interpolated as built, never escaped twice")
        let optional: String? = nil
        let attribute: HTML = #"<input value="\#(optional)"><a title="\#("\" onmouseover=\"x")">"#
        #expect(attribute.text == #"<input value=""><a title="&quot; onmouseover=&quot;x">"#)
    }

    @Test func consoleURL_jobIdCannotLeaveItsSegment() {
        #expect(ConsoleURL.job("../v1/jobs?x=1#y") == "/console/jobs/..%2Fv1%2Fjobs%3Fx%3D1%23y")
        #expect(ConsoleURL.with("/console/jobs", [("state", "Success"), ("tag", nil), ("since", "2026-01-01T00:00:00+08:00")])
            == "/console/jobs?state=Success&since=2026-01-01T00%3A00%3A00%2B08%3A00")
    }

    @Test func consoleRoute_fixedURLs_andMethods() {
        #expect(ConsoleRoute.match(method: .get, path: []) == .route(.overview))
        #expect(ConsoleRoute.match(method: .get, path: ["jobs"]) == .route(.jobs))
        #expect(ConsoleRoute.match(method: .get, path: ["jobs", "j1"]) == .route(.job(jobID: "j1")))
        #expect(ConsoleRoute.match(method: .post, path: ["jobs", "j1", "describe"]) == .route(.describe(jobID: "j1")))
        #expect(ConsoleRoute.match(method: .get, path: ["jobs", "j1", "describe"]) == .methodNotAllowed(allowed: [.post]))
        #expect(ConsoleRoute.match(method: .post, path: ["jobs", "j1", "redeliver"]) == .route(.redeliver(jobID: "j1")))
        #expect(ConsoleRoute.match(method: .get, path: ["jobs", "j1", "redeliver"]) == .methodNotAllowed(allowed: [.post]))
        #expect(ConsoleRoute.match(method: .get, path: ["rejected"]) == .route(.rejected))
        #expect(ConsoleRoute.match(method: .get, path: ["callbacks", "7"]) == .route(.callback(callbackID: 7)))
        #expect(ConsoleRoute.match(method: .get, path: ["callbacks", "7", "raw"]) == .route(.rawBody(callbackID: 7)))
        #expect(ConsoleRoute.match(method: .get, path: ["callbacks", "x"]) == .notFound)
        #expect(ConsoleRoute.match(method: .get, path: ["assets", "console.css"]) == .route(.asset(name: "console.css")))
        #expect(ConsoleRoute.match(method: .get, path: ["assets", "../openapi.yaml"]) == .notFound)
        #expect(ConsoleRoute.match(method: .post, path: ["logout"]) == .route(.logout))
        #expect(Route.match(method: .get, segments: ["console", "jobs"]) == .route(.console(path: ["jobs"])))
        #expect(Route.console(path: []).access == .consoleSession)
    }

    @Test func sessions_validUntilExpiry_underACurrentToken_only() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let sessions = ConsoleSessions(tokens: ["old", "new"], lifetime: .seconds(3600))
        let cookie = sessions.issue(for: "old", now: now)
        #expect(sessions.isValid(cookie, now: now))
        #expect(sessions.isValid(cookie, now: now + 3599))
        #expect(!sessions.isValid(cookie, now: now + 3600), "expired")
        #expect(!ConsoleSessions(tokens: ["new"], lifetime: .seconds(3600)).isValid(cookie, now: now), "its token was rotated out")
        var parts = cookie.split(separator: ".").map(String.init)
        parts[0] = String(Int(parts[0])! + 86_400)
        #expect(!sessions.isValid(parts.joined(separator: "."), now: now), "a longer expiry breaks the MAC")
        #expect(!sessions.isValid("", now: now))
        #expect(!sessions.isValid("1.2.zz", now: now))
        #expect(!sessions.isValid(nil, now: now))
    }

    @Test func csrf_needsEqualCookieAndField_andASameOrigin() {
        let token = String(repeating: "ab", count: 32)
        #expect(ConsoleCSRF.accepts(cookie: token, field: token, origin: nil, host: "h:1"))
        #expect(ConsoleCSRF.accepts(cookie: token, field: token, origin: "http://h:1", host: "h:1"))
        #expect(!ConsoleCSRF.accepts(cookie: token, field: token, origin: "https://evil.example", host: "h:1"))
        #expect(ConsoleCSRF.accepts(cookie: token, field: token, origin: "null", host: "h:1"), "what no-referrer pages send")
        #expect(!ConsoleCSRF.accepts(cookie: token, field: String(repeating: "cd", count: 32), origin: "null", host: "h:1"))
        #expect(!ConsoleCSRF.accepts(cookie: nil, field: token, origin: nil, host: "h:1"))
        #expect(!ConsoleCSRF.accepts(cookie: token, field: nil, origin: nil, host: "h:1"))
        #expect(!ConsoleCSRF.accepts(cookie: token, field: String(repeating: "cd", count: 32), origin: nil, host: "h:1"))
        #expect(!ConsoleCSRF.accepts(cookie: "", field: "", origin: nil, host: "h:1"))
    }

    @Test func cookies_parsedByName_firstWins() {
        let cookies = ConsoleSessions.cookies(["a=1; b=2", "a=3; c = 4"])
        #expect(cookies == ["a": "1", "b": "2", "c": "4"])
    }

    @Test func prettyPrinter_indentsJSONAndXML_keepingTheirText() {
        #expect(BodyPrettyPrinter.json(#"{"a":[1,{"b":"x,{y}"}],"c":{},"d":[]}"#) == """
            {
              "a": [
                1,
                {
                  "b": "x,{y}"
                }
              ],
              "c": {},
              "d": []
            }
            """)
        #expect(BodyPrettyPrinter.xml("<?xml version=\"1.0\"?><Response><JobsDetail><JobId>j1</JobId><Empty/><E></E></JobsDetail></Response>") == """
            <?xml version="1.0"?>
            <Response>
              <JobsDetail>
                <JobId>j1</JobId>
                <Empty/>
                <E></E>
              </JobsDetail>
            </Response>
            """)
        #expect(BodyPrettyPrinter.pretty(Array("not <json".utf8), format: nil) == "not <json")
    }
}
