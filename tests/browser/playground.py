"""Drives the playground at --url in headless Chromium (Debian's /usr/bin/chromium, via
Playwright) as a person would, and asserts what the pages show. Run by
tests/it/playground.rs against a real server; exits non-zero on the first failed check.

Checks: a wrong key shows the API's authentication error next to the key field; the
key survives a reload (session storage); classify draws one bar per label, best first,
widths proportional to the scores, the chosen label marked, with tokens and latency;
an invalid field shows the API's message next to that field; a 20-line batch file
runs to completion from the page and its download link serves 20 result rows; the
saved classifiers page lists the classifier the caller created, and using it from
there classifies with it. Saved classifiers that learn: the Adapt form shows the
API's refusal of too few texts (and saves nothing); a result classified with a saved
classifier is corrected with its "Correct it" control, which saves the next version
with the text as an example of the label picked, and the classifiers page lists both
versions with how each was made. No page error and no Content-Security-Policy
violation on the way. Screenshots of each page go to --screenshots.
"""
import argparse
import functools
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
LABELS = ["billing", "shipping", "technical"]
BATCH_TEXTS = [
    "I was charged twice for my order",
    "my parcel has not arrived yet",
    "the app crashes when I open settings",
    "please refund the duplicate payment",
    "the tracking number does not work",
]
ROUTER_LABELS = ["billing", "technical_issue"]
CORRECTED_TEXT = "my card was charged twice"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def bars(page, scope="#classify-results"):
    """Every bar of the first result: label, score, chosen, fill and track widths."""
    return page.locator(f"{scope} .result").first.locator(".bar").evaluate_all(
        """els => els.map(e => ({
            label: e.dataset.label,
            score: Number(e.dataset.score),
            chosen: e.dataset.chosen === 'true',
            shown: e.querySelector('.bar-value').textContent,
            fill: e.querySelector('.bar-fill').getBoundingClientRect().width,
            track: e.querySelector('.bar-track').getBoundingClientRect().width,
        }))"""
    )


def check_bars(rows, labels):
    check(sorted(r["label"] for r in rows) == sorted(labels), f"one bar per label: {rows}")
    scores = [r["score"] for r in rows]
    check(scores == sorted(scores, reverse=True), f"bars ordered by score: {rows}")
    check(abs(sum(scores) - 1) < 1e-3, f"single-mode scores sum to 1: {scores}")
    check([r["chosen"] for r in rows] == [True] + [False] * (len(rows) - 1),
          f"only the best label is marked in single mode: {rows}")
    for r in rows:
        # A bar is at least 2 px wide so that a near-zero score stays visible.
        expected = max(r["score"] * r["track"], 2)
        check(abs(r["fill"] - expected) <= 1.5, f"bar width proportional to the score: {r}")
        check(r["shown"] == f"{r['score'] * 100:.1f}%", f"the score is written next to the bar: {r}")


def api(base, key, method, path, body=None):
    """Calls the API directly (not through the page): (status, JSON answer)."""
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read() or b"null")


def check_adapt_refusal(page, call):
    """The Adapt form of `router`: texts and a job id at once are refused before any
    call, and too few texts get the API's refusal; no version is saved."""
    item = page.locator('#classifiers-list li[data-classifier="router"]')
    item.locator(".adapt > summary").click()
    item.locator(".adapt-texts").fill("\n".join(BATCH_TEXTS) + "\n\n")
    item.locator(".adapt-job").fill("batch_0")
    item.locator(".adapt-submit").click()
    status = item.locator(".adapt-status")
    expect(status).to_have_text(re.compile("not both"))
    item.locator(".adapt-job").fill("")
    item.locator(".adapt-submit").click()
    expect(status).to_contain_text(f"too few lines: {len(BATCH_TEXTS)}")
    expect(status).to_contain_text("no version was saved")
    check(len(call("GET", "/v1/classifiers/router/versions")[1]["data"]) == 1,
          "a refused adaptation saves no version")
    print(f"ok: adapting router to {len(BATCH_TEXTS)} texts is refused: {status.text_content()}")


def check_correction(page, call, screenshots):
    """Classifies with `router` and teaches it the other label with "Correct it"."""
    page.click("#tab-classify")
    page.select_option("#classify-classifier", "router")
    page.fill("#classify-texts", CORRECTED_TEXT)
    page.click("#classify-submit")
    expect(page.locator("#classify-meta span").filter(has_text=re.compile(r"^router@v1$"))).to_have_count(1)
    best = bars(page)[0]["label"]
    other = next(label for label in ROUTER_LABELS if label != best)
    control = page.locator("#classify-results .result").first.locator(".correct-it")
    expect(control.locator(".correct-label option")).to_have_count(len(ROUTER_LABELS))
    expect(control.locator(".correct-label")).to_have_value(best)
    control.locator(".correct-label").select_option(other)
    control.locator(".correct-teach").click()
    expect(control.locator(".correct-status")).to_have_text("Saved as router@v2")
    expect(page.locator('#classify-classifier option[value="router"]')).to_contain_text("(v2)")
    status, view = call("GET", "/v1/classifiers/router")
    check(status == 200 and view["version"] == 2, f"router is at v2: {view}")
    check(view["examples"].get(other) == [CORRECTED_TEXT], f"the text is an example of {other}: {view}")
    check(view["origin"]["kind"] == "taught" and view["origin"]["added"] == 1, f"v2 was taught: {view}")
    print(f"ok: corrected router's {best} to {other}, saved as {view['reference']}")

    page.click("#tab-classifiers")
    item = page.locator('#classifiers-list li[data-classifier="router"]')
    expect(item.locator(".badge")).to_have_text("v2")
    expect(item.locator(".classifier-version")).to_have_text(["v2 — +1 example", "v1 — created"])
    page.screenshot(path=screenshots / "classifier-versions.png", full_page=True)
    print("ok: router's versions listed with how each was made")


def check_learning(page, base, key, screenshots):
    """A classifier created through the API: adapted (refused), then corrected."""
    call = functools.partial(api, base, key)
    status, saved = call("POST", "/v1/classifiers", {"name": "router", "labels": ROUTER_LABELS})
    check(status == 201, f"router created: {status} {saved}")
    # The page lists it once the classifiers page loads them again.
    page.click("#tab-classifiers")
    item = page.locator('#classifiers-list li[data-classifier="router"]')
    expect(item.locator(".classifier-version")).to_have_text(["v1 — created"])
    check_adapt_refusal(page, call)
    check_correction(page, call, screenshots)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--classifier", required=True,
                        help="name of a saved classifier the caller created")
    parser.add_argument("--screenshots", required=True, type=Path)
    parser.add_argument("--readme-screenshot", type=Path,
                        help="also write a 1000 px wide screenshot of the classify page here")
    args = parser.parse_args()
    args.screenshots.mkdir(parents=True, exist_ok=True)
    base = args.url.rstrip("/")

    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if "Content Security Policy" in msg.text else None)
        page.goto(base + "/")
        expect(page).to_have_title("zeroshot playground")
        expect(page.locator("#model-name")).to_have_text(re.compile(r"\S"))

        # A wrong key: the API's message next to the key field, which is highlighted.
        page.fill("#api-key", "zs_" + "0" * 64)
        page.click("#classify-submit")
        expect(page.locator("#api-key-error")).to_have_text("invalid or revoked API key")
        expect(page.locator("#api-key")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#classify-error")).to_contain_text("invalid or revoked API key")
        print("ok: a wrong key shows the authentication error")

        # The right key, kept for the browser session.
        page.fill("#api-key", args.api_key)
        page.reload()
        expect(page.locator("#api-key")).to_have_value(args.api_key)

        page.fill("#classify-texts", "my card was charged twice")
        page.fill("#classify-labels", ", ".join(LABELS))
        page.click("#classify-submit")
        expect(page.locator("#classify-results .bar")).to_have_count(len(LABELS))
        expect(page.locator("#api-key-error")).to_be_hidden()
        expect(page.locator("#classify-error")).to_be_hidden()
        rows = bars(page)
        check(rows[0]["label"] == "billing", f"billing first: {rows}")
        check_bars(rows, LABELS)
        expect(page.locator("#classify-tokens")).to_have_text(re.compile(r"^\d+ tokens$"))
        expect(page.locator("#classify-latency")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
        page.screenshot(path=args.screenshots / "classify.png", full_page=True)
        print(f"ok: classify bars {[(r['label'], round(r['score'], 3)) for r in rows]}")

        # Several texts, one per line: one result card each, in input order.
        page.fill("#classify-texts", "where is my parcel\nplease refund the duplicate payment")
        page.click("#classify-submit")
        expect(page.locator("#classify-results .result")).to_have_count(2)
        firsts = page.locator("#classify-results .result").evaluate_all(
            "els => els.map(e => e.querySelector('.bar').dataset.label)")
        check(firsts == ["shipping", "billing"], f"each text's best label first: {firsts}")
        print(f"ok: two texts, best labels {firsts}")

        # An invalid field: the API's message next to it, highlighted, named in the banner.
        page.click('label[for="classify-mode-multi"]')
        page.fill("#classify-threshold", "5")
        page.click("#classify-submit")
        expect(page.locator("#classify-threshold-error")).to_have_text(
            "threshold must be between 0 and 1, got 5")
        expect(page.locator("#classify-threshold")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#classify-error code")).to_have_text("threshold")
        page.fill("#classify-threshold", "0.3")
        page.click('label[for="classify-mode-single"]')
        print("ok: an invalid threshold is shown next to its field")

        # A batch job from the page: create, upload through the presigned form, start, watch.
        page.click("#tab-batch")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tickets.ndjson"
            lines = [json.dumps({"text": BATCH_TEXTS[i % len(BATCH_TEXTS)], "id": f"t-{i + 1}"})
                     for i in range(20)]
            path.write_text("\n".join(lines) + "\n")
            page.set_input_files("#batch-file", str(path))
            page.fill("#batch-labels", ", ".join(LABELS))
            page.click("#batch-submit")
            expect(page.locator("#batch-status")).to_have_text("completed", timeout=180_000)
        expect(page.locator("#batch-lines")).to_have_text("20 / 20")
        expect(page.locator("#batch-progress")).to_have_attribute("aria-valuenow", "100")
        expect(page.locator("#batch-eta")).to_have_text("done")
        download = page.locator("#batch-download")
        expect(download).to_be_visible()
        job_id = page.locator("#batch-job-id").text_content()
        expect(page.locator(f'#jobs-list tr[data-job="{job_id}"] .status')).to_have_text("completed")
        response = page.request.get(download.get_attribute("href"))
        check(response.status == 200, f"download answered {response.status}")
        check(response.headers["content-type"].startswith("application/x-ndjson"),
              f"results are NDJSON: {response.headers['content-type']}")
        rows = [json.loads(line) for line in response.text().splitlines()]
        check(len(rows) == 20, f"20 result rows, got {len(rows)}")
        check([r["line"] for r in rows] == list(range(1, 21)), "rows in input order")
        check([r["id"] for r in rows] == [f"t-{i}" for i in range(1, 21)], "ids echoed")
        check(all(r["label"] in LABELS for r in rows), f"every row labelled: {rows[:3]}")
        page.screenshot(path=args.screenshots / "batch.png", full_page=True)
        print(f"ok: batch {job_id} completed from the page, 20 rows downloaded")

        # Saved classifiers: the one the caller created, with its labels and version.
        page.click("#tab-classifiers")
        item = page.locator(f'#classifiers-list li[data-classifier="{args.classifier}"]')
        expect(item).to_be_visible()
        expect(item.locator(".badge")).to_have_text("v1")
        check(item.locator(".chip").count() >= 2, "the classifier's labels are listed")
        page.screenshot(path=args.screenshots / "classifiers.png", full_page=True)
        item.get_by_role("button", name="Use in Classify").click()
        expect(page.locator("#classify-classifier")).to_have_value(args.classifier)
        expect(page.locator("#classify-labels")).to_be_hidden()
        page.fill("#classify-texts", "my card was charged twice")
        page.click("#classify-submit")
        expect(page.locator("#classify-meta")).to_contain_text(f"{args.classifier}@v1")
        print(f"ok: classifier {args.classifier} listed and used")

        check_learning(page, base, args.api_key, args.screenshots)

        # The API docs: Swagger UI (served by the binary) renders every operation of
        # /openapi.json under the page's Content-Security-Policy.
        operations = page.request.get(base + "/openapi.json").json()["paths"]
        count = sum(len(item) for item in operations.values())
        page.goto(base + "/docs")
        expect(page.locator(".opblock")).to_have_count(count)
        expect(page.locator(".opblock-summary-path", has_text="/v1/classify")).to_be_visible()
        page.screenshot(path=args.screenshots / "docs.png", full_page=True)
        print(f"ok: /docs renders all {count} operations")

        if args.readme_screenshot:
            page.set_viewport_size({"width": 1000, "height": 600})
            page.select_option("#classify-classifier", "")
            page.fill("#classify-texts", "my card was charged twice")
            page.fill("#classify-labels", ", ".join(LABELS))
            page.click("#classify-submit")
            expect(page.locator("#classify-meta")).not_to_contain_text(args.classifier)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=args.readme_screenshot, full_page=True)
            print(f"wrote {args.readme_screenshot}")
        browser.close()

    check(not problems, "no page errors or CSP violations:\n" + "\n".join(problems))
    print(f"screenshots in {args.screenshots}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        sys.exit(1)
