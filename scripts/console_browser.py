"""Drives the ci-callbackd console in headless Chromium (Debian's, through Playwright's Python API).

Run by scripts/console-browser-test, which starts the service with API_TOKENS and seeds the jobs named
in the arguments. Each check prints one line; the first failure raises, and the exit status is non-zero.
With --screenshots DIR it also saves a small PNG of every page there.
"""

import argparse
import hashlib
import pathlib
import sys

from playwright.sync_api import sync_playwright

CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--watermark-job", required=True)
    parser.add_argument("--watermark-text", required=True)
    parser.add_argument("--watermark-body", required=True, help="file holding the body posted for the watermark job")
    parser.add_argument("--xss-job", required=True)
    parser.add_argument("--tag", required=True, help="tag of the jobs seeded for paging")
    parser.add_argument("--tag-count", type=int, required=True)
    parser.add_argument("--screenshots")
    args = parser.parse_args()
    base = args.base
    shots = pathlib.Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)

    console_problems = []
    dialogs = []

    def check(condition, what):
        if not condition:
            raise AssertionError(what)
        print("ok  " + what)

    def no_csp_violations(page, where):
        reported = page.evaluate("window.__cspViolations || []")
        check(not reported, f"{where}: no CSP violation reported to the page {reported}")

    def shot(page, name):
        if shots:
            page.screenshot(path=str(shots / f"{name}.png"))

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 760})
        context.add_init_script(CSP_PROBE)
        page = context.new_page()
        page.set_default_timeout(15000)
        page.on("console", lambda message: console_problems.append(message.text)
                if message.type in ("error", "warning") else None)
        page.on("pageerror", lambda error: console_problems.append(str(error)))

        def on_dialog(dialog):
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)

        # Log in.
        page.goto(base + "/console/")
        check(page.url.endswith("/console/login"), "an anonymous visit lands on the login form")
        shot(page, "login")
        page.fill("#token", "wrong-" + args.token)
        page.click("form[action='/console/login'] button[type=submit]")
        page.locator("p.error").wait_for()
        check(page.locator("p.error").is_visible(), "a wrong token is refused with a message")
        page.fill("#token", args.token)
        page.click("form[action='/console/login'] button[type=submit]")
        page.wait_for_url(base + "/console/")
        check(page.locator("h1").inner_text() == "Overview", "logging in opens the overview")

        # The overview.
        check(page.locator("svg.chart").count() == 2, "the overview draws the hour and day charts as inline SVG")
        check(page.locator("svg.chart rect.accepted").count() >= 1, "the hour chart has bars for the seeded callbacks")
        no_csp_violations(page, "overview")
        shot(page, "overview")

        # Search a JobId by prefix and open its detail: the watermark comes first.
        prefix = args.watermark_job[: len(args.watermark_job) - 4]
        page.fill("input[name=q]", prefix)
        page.press("input[name=q]", "Enter")
        page.wait_for_url("**/console/jobs/" + args.watermark_job)
        watermark = page.locator("#watermark-text")
        check(watermark.is_visible() and watermark.inner_text() == args.watermark_text,
              "searching a JobId prefix opens the job, whose watermark text is visible")
        copy = page.locator("button[data-copy=watermark-text]")
        check(copy.is_visible(), "the copy button is shown (the console's script ran under the CSP)")
        copy.click()
        page.wait_for_function("document.querySelector('button[data-copy]').textContent !== 'Copy watermark text'")
        no_csp_violations(page, "job detail")

        # The job's webhook delivery (the subscription's endpoint refuses connections): listed with its
        # attempts and last error once the worker has tried, then redelivered from the page.
        deliveries = page.locator("#deliveries tbody tr")
        for _ in range(60):
            if deliveries.count() and deliveries.first.locator("td[data-label=Attempts]").inner_text() != "0":
                break
            page.wait_for_timeout(500)
            page.reload()
        row = deliveries.first
        check(deliveries.count() == 1 and row.locator("td[data-label=Attempts]").inner_text() != "0",
              "the job page lists its webhook delivery once the worker has tried it")
        last_error = row.locator("td[data-label='Last error']").inner_text()
        check(last_error not in ("", "—"), f"the delivery shows its last error ({last_error!r})")
        shot(page, "job")
        row.locator("button", has_text="Redeliver").click()
        page.wait_for_url("**redelivered=queued")
        check(page.locator("p[role=status]", has_text="due again now").is_visible(),
              "redeliver (a POST with the CSRF token) queues the delivery again")
        no_csp_violations(page, "job deliveries")

        # Open a raw body, pretty-printed, then download it byte for byte.
        page.locator("a", has_text="view #").first.click()
        page.wait_for_url("**/console/callbacks/*")
        body_text = page.locator("pre#body").inner_text()
        check(args.watermark_job in body_text and "\n  " in body_text, "the callback page shows the body pretty-printed")
        shot(page, "callback")
        with page.expect_download() as download_info:
            page.locator("a[download]", has_text="Download").click()
        downloaded = pathlib.Path(download_info.value.path()).read_bytes()
        posted = pathlib.Path(args.watermark_body).read_bytes()
        check(hashlib.sha256(downloaded).digest() == hashlib.sha256(posted).digest(),
              f"the downloaded body is the posted one byte for byte ({len(downloaded)} bytes)")
        no_csp_violations(page, "callback")

        # Page through the list with filters, from the form.
        page.click("nav a[href='/console/jobs']")
        page.select_option("select[name=state]", "Success")
        page.fill("input[name=tag]", args.tag)
        page.fill("input[name=since]", "2000-01-01T00:00:00Z")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/console/jobs?*")
        seen = []
        pages = 0
        while True:
            pages += 1
            rows = page.locator("tbody tr")
            states = rows.locator("td[data-label=State]").all_inner_texts()
            tags = rows.locator("td[data-label=Tag]").all_inner_texts()
            check(all(s == "Success" for s in states) and all(t == args.tag for t in tags),
                  f"list page {pages}: {len(states)} rows, every one matches the filters")
            seen += rows.locator("td[data-label=JobId]").all_inner_texts()
            if pages == 1:
                shot(page, "jobs")
            following = page.locator("a[rel=next]")
            if following.count() == 0:
                break
            following.click()
            page.wait_for_load_state()
        check(pages >= 2 and len(seen) == args.tag_count and len(set(seen)) == len(seen),
              f"paging visits all {args.tag_count} filtered jobs once, over {pages} pages")
        no_csp_violations(page, "jobs")

        # Rejected callbacks, filtered by reason.
        page.click("nav a[href='/console/rejected']")
        page.fill("input[name=reason]", "no JobId")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/console/rejected?*")
        reasons = page.locator("td[data-label=Reason]").all_inner_texts()
        check(reasons and all("no JobId" in r for r in reasons), f"the rejected list filters by reason ({len(reasons)} shown)")
        shot(page, "rejected")
        no_csp_violations(page, "rejected")

        # The XSS sample is inert: shown as text, no img element, no dialog.
        page.goto(base + "/console/jobs/" + args.xss_job)
        page.wait_for_load_state("load")
        check(page.locator("img").count() == 0, "the XSS sample created no img element")
        check("<img src=x onerror=alert(1)>" in page.locator("main").inner_text(), "the XSS sample is shown literally")
        check(not dialogs, f"no alert dialog opened {dialogs}")
        no_csp_violations(page, "xss job")

        # On a phone-sized screen the detail stays readable (no horizontal scrolling of the page).
        phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
        small = phone.new_page()
        small.goto(base + "/console/jobs/" + args.watermark_job)
        overflow = small.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        check(overflow <= 1, f"the job page fits a 390 px screen (overflow {overflow} px)")
        shot(small, "job-phone")
        phone.close()

        # Log out.
        page.click("form[action='/console/logout'] button")
        page.wait_for_url("**/console/login")
        page.goto(base + "/console/jobs")
        check(page.url.endswith("/console/login"), "after logging out the console asks for a login again")

        csp_messages = [m for m in console_problems if "Content Security Policy" in m or "Refused to" in m]
        check(not csp_messages, f"the browser console shows no CSP violation {csp_messages}")
        browser.close()
    print("console-browser-test: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print("FAIL " + str(failure), file=sys.stderr)
        sys.exit(1)
