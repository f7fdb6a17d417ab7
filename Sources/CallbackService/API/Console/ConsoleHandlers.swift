import CIClient
import CIModel
import Foundation
import HTTPWire
import JobStore
import Logging
import TimeUnits

/// What the overview says about the background workers, which run beside the application.
public struct WorkerStatus: Sendable, Hashable {
    /// The reconciler runs (`RECONCILE`, with credentials).
    public var reconcile: Bool
    public var reconcileInterval: Duration?
    /// Final states wait for CI's confirmation (`VERIFY_CALLBACKS`).
    public var verifyCallbacks: Bool

    public init(reconcile: Bool = false, reconcileInterval: Duration? = nil, verifyCallbacks: Bool = false) {
        self.reconcile = reconcile
        self.reconcileInterval = reconcileInterval
        self.verifyCallbacks = verifyCallbacks
    }
}

/// One console request's view of the operator: signed in or not, and the CSRF token its forms carry.
struct ConsoleContext: Sendable {
    var csrf: String
    /// The CSRF cookie is new and must be set with this response.
    var setsCSRFCookie: Bool
    /// A session exists (or none is needed); the header then shows navigation.
    var signedIn: Bool
    /// Sessions are in use, so a logout button makes sense.
    var sessionsRequired: Bool
    /// Cookies get `Secure`: the request came over TLS per a trusted proxy.
    var secure: Bool
}

/// A page answer: status, the page, and headers of its own (a redirect's `Location`, cookies).
struct ConsoleError: Error {
    var status: HTTPStatus
    var message: String
}

extension CallbackApplication {
    /// `/console/…`: the operator console. Never throws: every failure is a page.
    func console(_ path: [String], request: HTTPRequest, logger: Logger) async -> HTTPResponse {
        let policy = configuration.accessPolicy
        let sessions = ConsoleSessions(tokens: policy.apiTokens, lifetime: configuration.consoleSessionLifetime)
        let cookies = ConsoleSessions.cookies(request.headers.values(for: "Cookie"))
        let csrfCookie = cookies[ConsoleSessions.csrfCookie].flatMap { Self.isCSRFToken($0) ? $0 : nil }
        let signedIn = !sessions.required || sessions.isValid(cookies[ConsoleSessions.sessionCookie], now: Date())
        let context = ConsoleContext(
            csrf: csrfCookie ?? ConsoleSessions.randomHex(32),
            setsCSRFCookie: csrfCookie == nil,
            signedIn: signedIn,
            sessionsRequired: sessions.required,
            secure: policy.cameOverTLS(peer: request.remoteAddress, forwardedProto: request.headers.values(for: "X-Forwarded-Proto"))
        )

        var response: HTTPResponse
        switch ConsoleRoute.match(method: request.method, path: path) {
        case .notFound:
            response = Self.errorPage(ConsoleError(status: .notFound, message: "There is no console page at this address."), context: context)
        case .methodNotAllowed(let allowed):
            response = Self.errorPage(ConsoleError(status: .methodNotAllowed, message: "This page does not take \(request.method.rawValue)."), context: context)
            response.headers.replaceOrAdd(name: "Allow", value: allowed.map(\.rawValue).joined(separator: ", "))
        case .route(let route):
            if path.isEmpty, !request.path.hasSuffix("/") {
                response = Self.redirect("/console/")
            } else if !signedIn, !route.isPublic {
                response =
                    request.method == .post
                    ? Self.errorPage(ConsoleError(status: .forbidden, message: "Your session has ended; log in again."), context: context)
                    : Self.redirect("/console/login")
            } else if request.method == .post,
                !ConsoleCSRF.accepts(
                    cookie: csrfCookie, field: Self.formItems(request.body).first { $0.name == ConsoleCSRF.field }?.value,
                    origin: request.headers["Origin"], host: request.headers["Host"])
            {
                logger.warning("console form refused: missing or wrong CSRF token", metadata: ["net.peer": "\(request.remoteAddress)"])
                response = Self.errorPage(
                    ConsoleError(status: .forbidden, message: "This form was not sent from the console page (missing or wrong CSRF token). Reload the page and try again."),
                    context: context)
            } else {
                do {
                    response = try await consolePage(route, request: request, context: context, sessions: sessions, logger: logger)
                } catch {
                    response = Self.errorPage(consoleError(error, logger: logger), context: context)
                }
            }
        }
        for (name, value) in ConsoleHeaders.all where !(name == "Cache-Control" && response.headers.contains(name: name)) {
            response.headers.replaceOrAdd(name: name, value: value)
        }
        if context.setsCSRFCookie {
            response.headers.add(
                name: "Set-Cookie",
                value: ConsoleSessions.setCookie(ConsoleSessions.csrfCookie, context.csrf, maxAge: 7 * 86400, secure: context.secure))
        }
        return response
    }

    private func consolePage(
        _ route: ConsoleRoute, request: HTTPRequest, context: ConsoleContext, sessions: ConsoleSessions, logger: Logger
    ) async throws -> HTTPResponse {
        switch route {
        case .asset(let name):
            return Self.asset(name)
        case .login:
            return login(request, context: context, sessions: sessions, logger: logger)
        case .logout:
            var response = Self.redirect("/console/login")
            response.headers.add(
                name: "Set-Cookie", value: ConsoleSessions.setCookie(ConsoleSessions.sessionCookie, "", maxAge: 0, secure: context.secure))
            return response
        case .overview:
            return try await overview(context)
        case .jobs:
            return try await jobList(request, context: context)
        case .job(let jobID):
            return try await jobDetail(jobID, request: request, context: context)
        case .describe(let jobID):
            return try await describeNow(jobID, logger: logger)
        case .redeliver(let jobID):
            return try await redeliver(jobID, request: request, logger: logger)
        case .rejected:
            return try await rejectedList(request, context: context)
        case .callback(let callbackID):
            return try await callbackPage(callbackID, context: context)
        case .rawBody(let callbackID):
            return try await rawBody(callbackID)
        case .search:
            return try await search(request, context: context)
        }
    }

    // MARK: Sign-in

    private func login(_ request: HTTPRequest, context: ConsoleContext, sessions: ConsoleSessions, logger: Logger) -> HTTPResponse {
        guard sessions.required else { return Self.redirect("/console/") }
        var status = HTTPStatus.ok
        var notice = HTML.empty
        if request.method == .post {
            let client = configuration.accessPolicy.clientAddress(
                peer: request.remoteAddress, forwardedFor: request.headers.values(for: "X-Forwarded-For"))
            if case .refuse(let retryAfter) = consoleLogins.decision(for: client) {
                logger.warning("console login refused: too many failed logins", metadata: ["net.peer": "\(client)"])
                var response = Self.errorPage(
                    ConsoleError(
                        status: .tooManyRequests,
                        message: "Too many wrong tokens from your address; try again in \(retryAfter) s (CONSOLE_LOGIN_ATTEMPTS a minute)."),
                    context: context)
                response.headers.replaceOrAdd(name: "Retry-After", value: "\(retryAfter)")
                return response
            }
            let token = Self.formItems(request.body).first { $0.name == "token" }?.value ?? ""
            if let matched = configuration.accessPolicy.matchingAPIToken(token) {
                consoleLogins.recordSuccess(from: client)
                var response = Self.redirect("/console/")
                response.headers.add(
                    name: "Set-Cookie",
                    value: ConsoleSessions.setCookie(
                        ConsoleSessions.sessionCookie, sessions.issue(for: matched, now: Date()),
                        maxAge: sessions.lifetime.components.seconds, secure: context.secure))
                return response
            }
            consoleLogins.recordFailure(from: client)
            logger.warning("console login refused", metadata: ["net.peer": "\(client)"])
            status = .unauthorized
            notice = #"<p class="error" role="alert">That token is not one of the API tokens.</p>"#
        }
        var signedOut = context
        signedOut.signedIn = false
        let body: HTML = """
            <section class="login"><h1>Log in</h1>\(notice)
            <form method="post" action="/console/login">\(Self.csrfField(context))
            <label for="token">API token (one of <code>API_TOKENS</code>)
            <input id="token" name="token" type="password" autocomplete="current-password" required autofocus></label>
            <button type="submit">Log in</button></form></section>
            """
        return Self.page(status: status, title: "Log in", context: signedOut, main: body)
    }

    // MARK: Overview

    private func overview(_ context: ConsoleContext) async throws -> HTTPResponse {
        let nowMicros = Date().microsecondsSince1970
        let overview = try await store.consoleOverview(now: Date(microsecondsSince1970: nowMicros))
        let hourChart = CallbackRateChart.svg(
            overview.hour, startMicros: overview.hourStartMicros, bucketSeconds: 60, bucketCount: 60, title: "Callbacks per minute by outcome, last hour")
        let dayBucketSeconds = Int(overview.dayBucketMicros / 1_000_000)
        let dayChart = CallbackRateChart.svg(
            overview.day, startMicros: overview.dayStartMicros, bucketSeconds: dayBucketSeconds, bucketCount: 86_400 / dayBucketSeconds,
            title: "Callbacks per minute by outcome, last day (\(dayBucketSeconds / 60)-minute bars)")
        let hourTotals = Dictionary(grouping: overview.hour, by: \.outcome).mapValues { $0.reduce(0) { $0 + $1.count } }

        let oldest: HTML =
            if let job = overview.longestSilentOpenJob {
                #"<a href="\#(ConsoleURL.job(job.jobID))">\#(job.jobID)</a><br><span class="muted">last heard \#(job.lastReceivedAt)</span>"#
            } else { "none" }
        let status = configuration.workerStatus
        let verification: HTML =
            if status.verifyCallbacks {
                """
                on: \(Self.figure(overview.verificationPending)) pending\
                \(overview.oldestPendingMicros.map { Self.since($0, nowMicros: nowMicros) } ?? .empty)
                """
            } else { "off (<code>VERIFY_CALLBACKS=false</code>)" }
        let reconcile: HTML =
            if status.reconcile {
                "on, every \(status.reconcileInterval.map { "\($0.components.seconds) s" } ?? "interval")"
            } else { "off (no CI credentials, or <code>RECONCILE=false</code>)" }
        let legend = HTML(
            joining: CallbackRateChart.outcomes.map { outcome in
                #"<span class="o-\#(outcome.rawValue)">■ \#(outcome.rawValue) (\#(hourTotals[outcome] ?? 0) in the last hour)</span>"#
            })
        let body: HTML = """
            <h1>Overview</h1>
            <div class="cards">
            <div class="card"><div class="muted">Open jobs</div><div class="figure">\(Self.figure(overview.openJobs))</div><a href="/console/jobs?state=Running">running</a> · <a href="/console/jobs?state=Submitted">submitted</a></div>
            <div class="card"><div class="muted">Open job silent longest</div>\(oldest)</div>
            <div class="card"><div class="muted">Verification</div>\(verification)</div>
            <div class="card"><div class="muted">Reconciler</div>\(reconcile)</div>
            </div>
            \(overview.rollupBehind ? Self.rollupBehindNotice(overview) : HTML.empty)
            <h2>Callbacks per minute, last hour</h2>\(hourChart)
            <p class="legend">\(legend)</p>
            <h2>Callbacks per minute, last day</h2>\(dayChart)
            """
        return Self.page(title: "Overview", context: context, main: body)
    }

    /// A capped count: "10,000+" past the cap, since counting further would cost as many index entries.
    private static func figure(_ count: CappedCount) -> String {
        guard count.exceedsCap else { return "\(count.counted)" }
        var digits = ""
        for (index, digit) in String(count.cap).reversed().enumerated() {
            if index > 0, index % 3 == 0 { digits.append(",") }
            digits.append(digit)
        }
        return String(digits.reversed()) + "+"
    }

    private static func rollupBehindNotice(_ overview: ConsoleOverview) -> HTML {
        """
            <p class="error" role="status">The per-minute counts are behind: callbacks from \(CallbackRateChart.timeLabel(overview.rolledUpBeforeMicros)) \
            to \(CallbackRateChart.timeLabel(overview.liveSinceMicros)) UTC are not counted yet. The rollup runs every <code>CONSOLE_ROLLUP_INTERVAL</code> \
            on every replica; the log says why it has not.</p>
            """
    }

    private static func since(_ micros: Int64, nowMicros: Int64) -> HTML {
        "; oldest waits \(max(0, (nowMicros - micros) / 1_000_000)) s"
    }

    // MARK: Jobs

    private func jobList(_ request: HTTPRequest, context: ConsoleContext) async throws -> HTTPResponse {
        // The filter form sends every field, empty ones included: an empty field is no filter.
        let items = request.queryItems.filter { !$0.value.isEmpty }
        let value = { (name: String) in items.first { $0.name == name }?.value }
        var query = try Self.jobListQuery(items)
        if value("limit") == nil { query.limit = 25 }
        let page = try await store.jobs(query)
        let filters: [(String, String?)] = ["state", "tag", "queueId", "since", "until", "limit"].map { ($0, value($0)) }
        let stateOptions = HTML(
            joining: ([""] + Self.listableStates.map(\.rawValue)).map { state in
                value("state") == state || (state.isEmpty && value("state") == nil)
                    ? #"<option value="\#(state)" selected>\#(state.isEmpty ? "any" : state)</option>"#
                    : #"<option value="\#(state)">\#(state.isEmpty ? "any" : state)</option>"#
            })
        let rows = HTML(
            joining: page.jobs.map { job in
                """
                <tr><td class="id" data-label="JobId"><a href="\(ConsoleURL.job(job.jobID))">\(job.jobID)</a></td>\
                <td data-label="State" class="state-\(job.state.rawValue)">\(job.state.rawValue)</td><td data-label="Tag">\(job.tag)</td>\
                <td data-label="First received">\(job.firstReceivedAt)</td><td data-label="Last received">\(job.lastReceivedAt)</td>\
                <td data-label="Callbacks">\(job.callbackCount)</td></tr>
                """
            })
        var pager: [HTML] = []
        if value("cursor") != nil { pager.append(#"<a href="\#(ConsoleURL.with("/console/jobs", filters))">First page</a>"#) }
        if let next = page.nextCursor {
            pager.append(#"<a href="\#(ConsoleURL.with("/console/jobs", filters + [("cursor", next.token)]))" rel="next">Next page</a>"#)
        }
        let body: HTML = """
            <h1>Jobs</h1>
            <form class="filters" method="get" action="/console/jobs">
            <label>State<select name="state">\(stateOptions)</select></label>
            <label>Tag<input name="tag" value="\(value("tag"))"></label>
            <label>Queue<input name="queueId" value="\(value("queueId"))"></label>
            <label>Since (RFC 3339)<input name="since" value="\(value("since"))" placeholder="2026-01-31T08:00:00Z"></label>
            <label>Until<input name="until" value="\(value("until"))"></label>
            <button type="submit">Filter</button> <a href="/console/jobs">Clear</a></form>
            <table class="wide"><thead><tr><th>JobId</th><th>State</th><th>Tag</th><th>First received</th><th>Last received</th><th>Callbacks</th></tr></thead>
            <tbody>\(rows)</tbody></table>
            \(page.jobs.isEmpty ? "<p>No jobs match.</p>" : HTML.empty)
            <nav class="pager" aria-label="Pages">\(pager)</nav>
            """
        return Self.page(title: "Jobs", context: context, main: body)
    }

    private func jobDetail(_ jobID: String, request: HTTPRequest, context: ConsoleContext) async throws -> HTTPResponse {
        let cursorText = request.queryItem("cursor")
        var historyQuery = CallbackHistoryQuery()
        if let cursorText {
            guard let cursor = CallbackHistoryCursor(token: cursorText) else { throw ConsoleError(status: .badRequest, message: "The cursor is not one this console made.") }
            historyQuery.cursor = cursor
        }
        async let storedJob = store.job(jobID)
        async let storedHistory = store.callbacks(forJob: jobID, page: historyQuery)
        async let storedDeliveries = jobDeliveries(jobID)
        let (job, history, deliveries) = try await (storedJob, storedHistory, storedDeliveries)
        guard job != nil || history != nil else { throw ConsoleError(status: .notFound, message: "No job has the JobId \(jobID).") }

        var sections: [HTML] = []
        if let job, job.hasWatermark {
            let text: HTML =
                if let message = job.watermarkMessage {
                    """
                    <pre id="watermark-text">\(message)</pre>\
                    <button type="button" class="secondary" data-copy="watermark-text" hidden>Copy watermark text</button>
                    """
                } else { #"<p>No watermark text yet: the job is <span class="state-\#(job.state.rawValue)">\#(job.state.rawValue)</span>.</p>"# }
            sections.append(#"<section class="watermark" aria-labelledby="wm"><h2 id="wm">Watermark text</h2>\#(text)</section>"#)
        }
        switch request.queryItem("described") {
        case "changed": sections.append(#"<p role="status">CI was asked: its answer changed the job.</p>"#)
        case "unchanged": sections.append(#"<p role="status">CI was asked: it reports the state already stored.</p>"#)
        case "unknown": sections.append(#"<p role="status" class="error">CI does not know this job.</p>"#)
        default: break
        }
        switch request.queryItem("redelivered") {
        case "queued": sections.append(#"<p role="status">The delivery is due again now, with a fresh retry schedule.</p>"#)
        case "missing": sections.append(#"<p role="status" class="error">That subscription has no such delivery (any more).</p>"#)
        case "superseded":
            sections.append(#"<p role="status" class="error">That delivery's event has been queued again since, as another delivery (a replay): redeliver that one.</p>"#)
        default: break
        }
        if let job {
            let describe: HTML =
                submitter == nil
                ? HTML.empty
                : """
                <form method="post" action="\(ConsoleURL.job(jobID))/describe">\(Self.csrfField(context))\
                <button type="submit">Describe in CI now</button></form>
                """
            sections.append(
                """
                <h2>Receipt</h2>
                <dl class="fields"><dt>State</dt><dd class="state-\(job.state.rawValue)">\(job.state.rawValue)</dd>\
                <dt>Tag</dt><dd>\(job.tag)</dd><dt>First received</dt><dd>\(job.firstReceivedAt)</dd>\
                <dt>Last received</dt><dd>\(job.lastReceivedAt)</dd><dt>State changed</dt><dd>\(job.stateChangedAt)</dd>\
                <dt>Callbacks</dt><dd>\(job.callbackCount)</dd><dt>State from</dt><dd>\(job.stateSource.rawValue)</dd></dl>
                \(describe)
                """)
        } else {
            sections.append("<p>Only unverified callbacks mention this job: it has a history but no state yet.</p>")
        }
        if let history {
            let rows = HTML(
                joining: history.callbacks.map { callback in
                    let verification: HTML =
                        if let verdict = callback.verification {
                            "\(verdict.rawValue)\(callback.verificationNote.map { ": " + $0 } ?? "")"
                        } else { "—" }
                    return """
                        <tr><td data-label="Received">\(callback.receivedAt)</td>\
                        <td data-label="State" class="state-\(callback.state.rawValue)">\(callback.state.rawValue)\(callback.applied ? HTML.empty : " (not applied)")</td>\
                        <td data-label="Source">\(callback.body?.source.rawValue ?? "—")</td><td data-label="Verification">\(verification)</td>\
                        \(Self.bodyCells(callback))</tr>
                        """
                })
            let next: HTML =
                if let cursor = history.nextCursor {
                    #"<nav class="pager"><a href="\#(ConsoleURL.with(ConsoleURL.job(jobID), [("cursor", cursor.token)]))" rel="next">Later callbacks</a></nav>"#
                } else { .empty }
            sections.append(
                """
                <h2>State timeline and callbacks</h2>
                <table class="wide"><thead><tr><th>Received</th><th>State</th><th>Source</th><th>Verification</th><th>Body</th><th>Open</th></tr></thead>
                <tbody>\(rows)</tbody></table>\(next)
                """)
        }
        if let deliveries {
            sections.append(Self.deliverySection(jobID, deliveries, context: context))
        }
        if let job {
            sections.append("<h2>JobsDetail</h2><pre>\(BodyPrettyPrinter.json(job.detailJSON))</pre>")
        }
        let body: HTML = "<h1>Job <code>\(jobID)</code></h1>\(sections)"
        return Self.page(title: "Job \(jobID)", context: context, main: body)
    }

    /// The job's webhook deliveries when any subscription exists; nil (no section) when none does.
    private func jobDeliveries(_ jobID: String) async throws -> [JobDelivery]? {
        guard try await store.hasSubscriptions() else { return nil }
        return try await store.deliveries(forJob: jobID)
    }

    /// Every value here came from a subscriber's endpoint or an operator: all of it is escaped by ``HTML``.
    private static func deliverySection(_ jobID: String, _ deliveries: [JobDelivery], context: ConsoleContext) -> HTML {
        let rows = HTML(
            joining: deliveries.map { delivery in
                let lastError: HTML =
                    switch (delivery.lastStatusCode, delivery.lastError) {
                    case (nil, nil): "—"
                    case (let code?, nil): "HTTP \(code)"
                    case (nil, let error?): "\(error)"
                    case (let code?, let error?): "HTTP \(code): \(error)"
                    }
                let when: HTML =
                    if let next = delivery.nextAttemptAt { "next attempt \(next)" } else { "\(delivery.completedAt ?? "—")" }
                return """
                    <tr><td data-label="Subscription" class="id"><code>\(delivery.subscriptionID)</code><br><span class="muted">\(delivery.url)</span></td>\
                    <td data-label="Event">\(delivery.eventState ?? "—")</td><td data-label="State" class="delivery-\(delivery.status.rawValue)">\(delivery.status.rawValue)</td>\
                    <td data-label="Attempts">\(delivery.attemptCount)</td><td data-label="Last error">\(lastError)</td><td data-label="When">\(when)</td>\
                    <td data-label="Action"><form method="post" action="\(ConsoleURL.job(jobID))/redeliver">\(csrfField(context))\
                    <input type="hidden" name="subscription" value="\(delivery.subscriptionID)"><input type="hidden" name="delivery" value="\(delivery.deliveryID)">\
                    <button type="submit" class="secondary">Redeliver</button></form></td></tr>
                    """
            })
        guard !deliveries.isEmpty else { return "<h2>Webhook deliveries</h2><p>No subscription has had a delivery of this job.</p>" }
        return """
            <h2>Webhook deliveries</h2>
            <table class="wide" id="deliveries"><thead><tr><th>Subscription</th><th>Event</th><th>State</th><th>Attempts</th><th>Last error</th>\
            <th>When</th><th>Action</th></tr></thead>
            <tbody>\(rows)</tbody></table>
            """
    }

    /// `POST /console/jobs/{JobId}/redeliver` with `subscription` and `delivery`: the delivery is due again at
    /// once with a fresh retry schedule, through the store call of the API's
    /// `POST /v1/subscriptions/{id}/deliveries/{deliveryId}/retry`.
    private func redeliver(_ jobID: String, request: HTTPRequest, logger: Logger) async throws -> HTTPResponse {
        let form = Self.formItems(request.body)
        guard let subscription = form.first(where: { $0.name == "subscription" })?.value, !subscription.isEmpty,
            let delivery = form.first(where: { $0.name == "delivery" }).flatMap({ Int64($0.value) }), delivery > 0
        else { throw ConsoleError(status: .badRequest, message: "The form names no subscription and delivery; reload the job's page.") }
        let outcome: String
        switch try await store.retryDelivery(subscriptionID: subscription, deliveryID: delivery) {
        case .queued: outcome = "queued"
        case .noSuchDelivery: outcome = "missing"
        case .superseded: outcome = "superseded"
        }
        logger.info("console redelivery", metadata: ["job.id": "\(jobID)", "webhook.delivery_id": "\(delivery)", "outcome": "\(outcome)"])
        return Self.redirect(ConsoleURL.with(ConsoleURL.job(jobID), [("redelivered", outcome)]))
    }

    /// A history row's body and link cells: what the stored body says, or that retention dropped it.
    private static func bodyCells(_ callback: StoredCallback) -> HTML {
        guard let body = callback.body else {
            return #"<td data-label="Body">pruned by retention (CALLBACK_RETENTION)</td><td data-label="Open">—</td>"#
        }
        return """
            <td data-label="Body">\(body.format?.rawValue ?? "unknown"), \(body.bodySize) bytes\
            \(body.deliveryCount > 1 ? " × \(body.deliveryCount) deliveries" : HTML.empty)</td>\
            <td data-label="Open"><a href="\(ConsoleURL.callback(callback.callbackID))">view #\(callback.callbackID)</a> · \
            <a href="\(ConsoleURL.rawBody(callback.callbackID))" download>download</a></td>
            """
    }

    /// `POST /console/jobs/{JobId}/describe`: asks CI about the job now and stores a changed answer, as a
    /// reconcile sweep would.
    private func describeNow(_ jobID: String, logger: Logger) async throws -> HTTPResponse {
        guard let submitter else { throw ConsoleError(status: .serviceUnavailable, message: "CI credentials are not set, so CI cannot be asked.") }
        guard CIJobAnswers.isAskable(jobID) else { throw ConsoleError(status: .badRequest, message: "CI could not have issued this JobId, so it cannot be asked about it.") }
        let outcome: CIJobAnswers.DescribeOutcome
        do {
            outcome = try await CIJobAnswers.describe(jobID: jobID, client: submitter.client, store: store)
        } catch let error as CIClientError {
            logger.warning("console describe failed", metadata: ["job.id": "\(jobID)", "ci.error": "\(error)"])
            throw ConsoleError(status: .badGateway, message: "CI did not answer usefully: \(error)")
        }
        let flag =
            switch outcome {
            case .changed: "changed"
            case .unchanged: "unchanged"
            case .unknownToCI: "unknown"
            }
        return Self.redirect(ConsoleURL.with(ConsoleURL.job(jobID), [("described", flag)]))
    }

    // MARK: Callbacks

    private func rejectedList(_ request: HTTPRequest, context: ConsoleContext) async throws -> HTTPResponse {
        let reason = request.queryItem("reason").flatMap { $0.isEmpty ? nil : $0 }
        var before: Int64?
        if let text = request.queryItem("before"), !text.isEmpty {
            guard let value = Int64(text), value > 0 else { throw ConsoleError(status: .badRequest, message: "before must be a callback id.") }
            before = value
        }
        let page = try await store.rejectedCallbacks(reasonContains: reason, before: before, limit: 50)
        let rows = HTML(
            joining: page.callbacks.map { callback in
                """
                <tr><td data-label="Received"><a href="\(ConsoleURL.callback(callback.callbackID))">\(callback.receivedAt)</a></td>\
                <td data-label="Reason">\(callback.rejectionReason)</td><td data-label="From" class="id">\(callback.remoteAddress ?? "—")</td>\
                <td data-label="Size">\(callback.bodySize) bytes</td>\
                <td data-label="Preview"><code>\(Self.preview(callback.body, size: callback.bodySize))</code></td></tr>
                """
            })
        var pager: [HTML] = []
        if before != nil { pager.append(#"<a href="\#(ConsoleURL.with("/console/rejected", [("reason", reason)]))">Newest</a>"#) }
        if let next = page.nextBefore {
            pager.append(#"<a href="\#(ConsoleURL.with("/console/rejected", [("reason", reason), ("before", String(next))]))" rel="next">Older</a>"#)
        }
        let body: HTML = """
            <h1>Rejected callbacks</h1>
            <form class="filters" method="get" action="/console/rejected">
            <label>Reason contains<input name="reason" value="\(reason)" placeholder="has no JobId"></label>
            <button type="submit">Filter</button> <a href="/console/rejected">Clear</a></form>
            <table class="wide"><thead><tr><th>Received</th><th>Reason</th><th>From</th><th>Size</th><th>Preview</th></tr></thead>
            <tbody>\(rows)</tbody></table>
            \(page.callbacks.isEmpty ? "<p>No rejected callbacks match.</p>" : HTML.empty)
            <nav class="pager" aria-label="Pages">\(pager)</nav>
            """
        return Self.page(title: "Rejected callbacks", context: context, main: body)
    }

    private func callbackPage(_ callbackID: Int64, context: ConsoleContext) async throws -> HTTPResponse {
        let callback: StoredCallbackRecord
        switch try await store.callbackLookup(callbackID) {
        case .stored(let record):
            callback = record
        case .notStored(let issued):
            throw Self.notStored(callbackID, issued: issued)
        case .pruned(let jobs):
            let links = HTML(joining: jobs.map { #"<li><a href="\#(ConsoleURL.job($0))"><code>\#($0)</code></a></li>"# })
            let body: HTML = """
                <h1>Callback #\(callbackID)</h1>
                <p class="error" role="alert">\(Self.prunedMessage(callbackID))</p>
                <p>The history of the jobs it mentioned remains:</p><ul>\(links)</ul>
                """
            return Self.page(status: .gone, title: "Callback \(callbackID)", context: context, main: body)
        }
        let jobs = HTML(joining: callback.jobIDs.map { #"<a href="\#(ConsoleURL.job($0))">\#($0)</a> "# })
        let body: HTML = """
            <h1>Callback #\(callback.callbackID)</h1>
            <dl class="fields"><dt>Received</dt><dd>\(callback.receivedAt)</dd><dt>Outcome</dt><dd class="o-\(callback.outcome.rawValue)">\(callback.outcome.rawValue)</dd>\
            \(callback.rejectionReason.map { reason in "<dt>Reason</dt><dd>\(reason)</dd>" } ?? HTML.empty)\
            <dt>Source</dt><dd>\(callback.source.rawValue)</dd><dt>From</dt><dd>\(callback.remoteAddress ?? "—")</dd>\
            <dt>Format</dt><dd>\(callback.format?.rawValue ?? "neither XML nor JSON")</dd><dt>Content-Type sent</dt><dd>\(callback.contentType ?? "—")</dd>\
            <dt>Event</dt><dd>\(callback.eventName ?? "—")</dd><dt>Deliveries</dt><dd>\(callback.deliveryCount)</dd>\
            <dt>Size</dt><dd>\(callback.bodySize) bytes\(callback.truncated ? " (only the first \(callback.body.count) bytes were kept)" : "")</dd>\
            <dt>Jobs</dt><dd>\(callback.jobIDs.isEmpty ? "none" : jobs)</dd></dl>
            <p><a class="button" href="\(ConsoleURL.rawBody(callback.callbackID))" download>Download the body byte for byte</a></p>
            <h2>Body</h2><pre id="body">\(BodyPrettyPrinter.pretty(callback.body, format: callback.format))</pre>
            """
        return Self.page(title: "Callback \(callback.callbackID)", context: context, main: body)
    }

    /// The body exactly as stored, as a download: typed by its detected format (never the sender's
    /// Content-Type, which could say `text/html`).
    private func rawBody(_ callbackID: Int64) async throws -> HTTPResponse {
        let callback: StoredCallbackRecord
        switch try await store.callbackLookup(callbackID) {
        case .stored(let record): callback = record
        case .pruned: throw ConsoleError(status: .gone, message: Self.prunedMessage(callbackID))
        case .notStored(let issued): throw Self.notStored(callbackID, issued: issued)
        }
        let (contentType, suffix) =
            switch callback.format {
            case .xml: ("application/xml; charset=utf-8", "xml")
            case .json: ("application/json; charset=utf-8", "json")
            case nil: ("application/octet-stream", "bin")
            }
        return HTTPResponse(
            status: .ok,
            headers: ["Content-Type": contentType, "Content-Disposition": "attachment; filename=\"callback-\(callbackID).\(suffix)\""],
            body: callback.body)
    }

    /// No body and no history names the id. An id the sequence never reached was never a callback; one it
    /// did was either a callback that named no job (a rejected one) whose body retention dropped, or an id a
    /// repeated delivery used up: nothing left tells which, so the page says both rather than "never existed".
    private static func notStored(_ callbackID: Int64, issued: Bool) -> ConsoleError {
        guard issued else { return ConsoleError(status: .notFound, message: "There is no callback \(callbackID).") }
        return ConsoleError(
            status: .notFound,
            message: """
                Callback #\(callbackID) was not found or pruned by retention: no body is stored under this id, and no job's history \
                names it. Retention drops bodies after CALLBACK_RETENTION, and a callback that named no job (a rejected one) leaves \
                nothing behind; an id can also have been used up without a body being stored (a repeated delivery).
                """)
    }

    private static func prunedMessage(_ callbackID: Int64) -> String {
        "Callback #\(callbackID) was stored, but its body has been pruned by retention (CALLBACK_RETENTION)."
    }

    /// Up to 160 characters of a body for a table cell, control characters shown as U+FFFD.
    private static func preview(_ body: [UInt8], size: Int) -> String {
        let text = String(decoding: body, as: UTF8.self)
        let shown = String(String.UnicodeScalarView(text.unicodeScalars.prefix(160).map { $0.value < 0x20 && $0 != " " ? " " : $0 }))
        return body.count < size || text.unicodeScalars.count > 160 ? shown + "…" : shown
    }

    // MARK: Search

    private func search(_ request: HTTPRequest, context: ConsoleContext) async throws -> HTTPResponse {
        let text = (request.queryItem("q") ?? "").trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty else { return Self.redirect("/console/jobs") }
        guard text.utf8.count <= CIFieldLimits().jobID else {
            throw ConsoleError(status: .badRequest, message: "A JobId is at most \(CIFieldLimits().jobID) bytes.")
        }
        if try await store.job(text) != nil { return Self.redirect(ConsoleURL.job(text)) }
        let matches = try await store.jobIDs(withPrefix: text)
        if matches.count == 1 { return Self.redirect(ConsoleURL.job(matches[0])) }
        let items = HTML(joining: matches.map { #"<li><a href="\#(ConsoleURL.job($0))"><code>\#($0)</code></a></li>"# })
        let more: HTML = matches.count == JobStore.maximumPrefixMatches ? "<p>The first \(matches.count) are shown; type more of the JobId.</p>" : .empty
        let body: HTML = """
            <h1>JobIds starting with <code>\(text)</code></h1>
            \(matches.isEmpty ? "<p>No job has a JobId that starts with this.</p>" : HTML.empty)<ul>\(items)</ul>\(more)
            """
        return Self.page(title: "Search", context: context, main: body)
    }

    // MARK: Errors

    private func consoleError(_ error: any Error, logger: Logger) -> ConsoleError {
        switch error {
        case let error as ConsoleError:
            return error
        case let error as APIError:
            return ConsoleError(status: error.status, message: error.message)
        case let error as TooManyListings:
            logger.warning("listing refused", metadata: ["error": "\(error)"])
            return ConsoleError(status: .serviceUnavailable, message: "Too many listings are in progress; try again in a few seconds.")
        case let error as StoreUnavailableError:
            logger.warning("database unavailable", metadata: ["error": "\(error)"])
            return ConsoleError(status: .serviceUnavailable, message: "The database is unavailable; try again in a few seconds.")
        case let error as StoredRowError:
            logger.error("stored row does not decode", metadata: ["error": "\(error)", "read": "\(error.read)", "column": "\(error.column)"])
            return ConsoleError(status: .internalServerError, message: "A stored row does not have the shape this build expects; the log names it.")
        default:
            logger.error("console request failed", metadata: ["error": "\(error)"])
            return ConsoleError(status: .internalServerError, message: "Something went wrong; the log says what.")
        }
    }

    // MARK: Rendering

    static func errorPage(_ error: ConsoleError, context: ConsoleContext) -> HTTPResponse {
        page(
            status: error.status, title: error.status.reasonPhrase, context: context,
            main: #"<h1>\#(error.status.reasonPhrase)</h1><p class="error" role="alert">\#(error.message)</p>"#)
    }

    static func page(status: HTTPStatus = .ok, title: String, context: ConsoleContext, main: HTML) -> HTTPResponse {
        let chrome: HTML =
            context.signedIn
            ? """
            <nav aria-label="Console"><ul><li><a href="/console/">Overview</a></li><li><a href="/console/jobs">Jobs</a></li>\
            <li><a href="/console/rejected">Rejected</a></li></ul></nav>
            <form method="get" action="/console/search" role="search"><input name="q" aria-label="JobId or prefix" placeholder="JobId or prefix" \
            autocomplete="off" spellcheck="false"><button type="submit">Search</button></form>
            \(context.sessionsRequired ? #"<form method="post" action="/console/logout">\#(csrfField(context))<button type="submit" class="secondary">Log out</button></form>"# : HTML.empty)
            """
            : .empty
        let document: HTML = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · ci-callbackd</title>
            <link rel="stylesheet" href="/console/assets/console.css"><script src="/console/assets/console.js" defer></script></head>
            <body><header><a class="brand" href="/console/">ci-callbackd</a>\(chrome)</header>
            <main>\(main)</main></body></html>
            """
        return HTTPResponse(status: status, headers: ["Content-Type": "text/html; charset=utf-8"], body: Array(document.text.utf8))
    }

    static func csrfField(_ context: ConsoleContext) -> HTML {
        #"<input type="hidden" name="csrf" value="\#(context.csrf)">"#
    }

    static func redirect(_ location: String) -> HTTPResponse {
        HTTPResponse(status: HTTPStatus(code: 303, reasonPhrase: "See Other"), headers: ["Location": location], body: [])
    }

    static func asset(_ name: String) -> HTTPResponse {
        let text = embeddedServiceFiles.first { $0.name == name }?.text ?? ""
        let type = name.hasSuffix(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8"
        return HTTPResponse(status: .ok, headers: ["Content-Type": type, "Cache-Control": "max-age=300"], body: Array(text.utf8))
    }

    /// An `application/x-www-form-urlencoded` body's fields, decoded as a query string is.
    static func formItems(_ body: [UInt8]) -> [(name: String, value: String)] {
        HTTPRequest(method: .post, target: "/?" + String(decoding: body, as: UTF8.self)).queryItems
    }

    private static func isCSRFToken(_ value: String) -> Bool {
        value.utf8.count == 64 && value.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

/// The headers every console response carries: a Content-Security-Policy that allows only the console's
/// own stylesheet and script (no inline script or style, nothing from elsewhere), no framing, no MIME
/// sniffing, no referrer (URLs hold JobIds), and no caching of pages that show customers' data.
enum ConsoleHeaders {
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    static let all: [(String, String)] = [
        ("Content-Security-Policy", contentSecurityPolicy),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]
}
