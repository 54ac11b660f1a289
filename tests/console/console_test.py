#!/usr/bin/env python3
"""The reviewer console in a real browser (headless Chromium over WebDriver).

Run by tests/console/run.sh (which installs chromium, chromium-driver and
selenium when missing), from the project root after `cargo build --release`:

    python3 tests/console/console_test.py [--bin target/release/triaged] [--shots target/console-screenshots]

Two servers, each on a fresh SQLite queue:

1. tokens, blind mode, shadow triage with the policy's reviewers per case (up to three):
   a wrong token is refused; the reviewers sign in, claim the CIFAR case, see
   its image at the model's size, find the suggestion absent, label by key; the
   case resolves and the suggestion shows after labeling; a hostile request id
   renders as text; a LIDC case shows its features; five reviewers tie a case
   (through the API) and an adjudicator resolves it with one click; the admin
   dashboard's numbers equal the API's (stats, /metrics, reviewer agreement).
2. open mode (no tokens, loopback) with `console.show_suggestion = true`:
   the name field signs in, the suggestion is visible before labeling.

Screenshots of every view go to --shots. Prints PASS or FAIL: <what>.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

HOSTILE = '<img src=x onerror="window.__xss=1">&amp;<b>'
IMAGE = "tests/fixtures/cifar/test/cat/0001.jpg"
REVIEWERS = ["dr-a", "dr-b", "dr-c", "dr-d", "dr-e"]


def tok(subject):
    return f"tok-{subject}-0123456789"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Server:
    """`triaged serve` on a free loopback port with its own queue and config."""

    def __init__(self, binary, workdir, config, env):
        self.dir = workdir
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        cfg = os.path.join(workdir, "triaged.toml")
        with open(cfg, "w") as f:
            f.write(config)
        self.log = open(os.path.join(workdir, "serve.log"), "w")
        full_env = dict(os.environ, TRIAGED__STORE__URL=f"sqlite://{workdir}/q.db", **env)
        self.proc = subprocess.Popen(
            [binary, "serve", "--bind", f"127.0.0.1:{self.port}", "--config", cfg],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            if self.proc.poll() is not None:
                raise Failure(f"server exited at start; see {workdir}/serve.log")
            try:
                with urllib.request.urlopen(self.base + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise Failure("server not ready within 60 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def api(self, path, method="GET", body=None, who="root", raw=False):
        headers = {"Content-Type": "application/json"}
        if who is not None:
            headers["Authorization"] = f"Bearer {tok(who)}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            if raw:
                return r, data
            return json.loads(data or b"null")


def auth_config(roles):
    lines = ["[auth]", "tokens = ["]
    for role, subject in roles:
        digest = hashlib.sha256(tok(subject).encode()).hexdigest()
        lines.append(f'  {{ sha256 = "{digest}", role = "{role}", subject = "{subject}" }},')
    lines.append("]")
    return "\n".join(lines) + "\n"


def browser():
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
              "--force-device-scale-factor=1"):
        opts.add_argument(a)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        opts.binary_location = binary
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


class Page:
    def __init__(self, drv, base, shots):
        self.drv, self.base, self.shots = drv, base, shots
        self.wait = WebDriverWait(drv, 15)

    def css(self, selector):
        return self.drv.find_elements(By.CSS_SELECTOR, selector)

    def visible(self, selector):
        return [e for e in self.css(selector) if e.is_displayed()]

    def until(self, what, fn):
        try:
            return self.wait.until(lambda d: fn())
        except Exception as e:
            raise Failure(f"{what}: timed out ({type(e).__name__}); status line: {self.status()!r}")

    def status(self):
        s = self.css("[data-role=status]")
        return s[0].text if s else None

    def open_fresh(self):
        self.drv.get(self.base + "/console/")
        self.drv.execute_script("window.sessionStorage.clear(); window.localStorage.clear();")
        self.drv.get(self.base + "/console/")

    def sign_in(self, value, field="token"):
        self.open_fresh()
        self.until(f"the sign-in field input[name={field}]", lambda: self.visible(f"input[name={field}]"))
        self.css(f"input[name={field}]")[0].send_keys(value)
        self.css("[data-action=sign-in]")[0].click()

    def shot(self, name):
        """The whole page (the window grows to fit it for the shot, then goes back to 1280x800)."""
        path = os.path.join(self.shots, f"{name}.png")
        extra = self.drv.execute_script("return window.outerHeight - window.innerHeight")
        height = self.drv.execute_script("return document.documentElement.scrollHeight")
        self.drv.set_window_size(1280, max(800, height + extra))
        try:
            self.drv.save_screenshot(path)
        finally:
            self.drv.set_window_size(1280, 800)
        return path

    def press(self, key):
        self.drv.execute_script("if (document.activeElement) document.activeElement.blur();")
        ActionChains(self.drv).send_keys(key).perform()

    def xss(self):
        return self.drv.execute_script("return window.__xss === 1")


def triage_image(server, request_id, who="app"):
    img = base64.b64encode(open(IMAGE, "rb").read()).decode()
    body = {"instances": [{"id": HOSTILE, "image": img}], "request_id": request_id}
    return server.api("/v1/models/cifar10-cnn/triage", "POST", body, who)["results"][0]


def lidc_features(server, who="app"):
    names = server.api("/v1/models/lidc-malignancy", who=who)["input"]["features"]
    # A mid-range nodule: the values only need to be plausible numbers.
    row = {n: 1.0 for n in names}
    return server.api("/v1/models/lidc-malignancy/triage", "POST", {"instances": [{"features": row}]}, who)["results"][0]


def label_via_api(server, who, target, label):
    """`who` claims until it holds `target` (claims go by priority), labels it,
    and gives back whatever else it claimed on the way."""
    held = []
    try:
        for _ in range(20):
            got = server.api("/v1/reviews/claim", "POST", None, who)
            check(got is not None, f"{who} could not claim case {target}")
            if got["case"]["id"] == target:
                break
            held.append(got["case"]["id"])
        server.api(f"/v1/reviews/{target}/labels", "POST", {"label": label}, who)
    finally:
        for other in held:
            server.api(f"/v1/reviews/{other}/release", "POST", None, who)


def key_for(k):
    return "0" if k == 9 else str(k + 1)


def blind_mode(binary, shots, work):
    roles = [("client", "app"), ("admin", "root"), ("adjudicator", "chief")] + [("reviewer", r) for r in REVIEWERS]
    server = Server(binary, work, auth_config(roles),
                    {"TRIAGED__TRIAGE__MODE": "shadow", "TRIAGED__TRIAGE__REVIEWERS": "3"})
    drv = browser()
    page = Page(drv, server.base, shots)
    try:
        # The page's own headers.
        resp, html = server.api("/console/", who=None, raw=True)
        csp = resp.headers.get("Content-Security-Policy", "")
        check("script-src 'self'" in csp and "unsafe" not in csp, f"console CSP: {csp!r}")
        check(resp.headers.get("X-Frame-Options") == "DENY", "X-Frame-Options")

        # A wrong token is refused, and says so.
        page.sign_in("not-a-token")
        page.until("a refusal of the wrong token", lambda: "not recognised" in (page.status() or ""))
        page.shot("sign-in")

        res = triage_image(server, HOSTILE)
        case_id = res["decision"]["case_id"]
        check(case_id, f"the CIFAR case was not routed: {res['decision']}")
        # The shipped policy chooses k per case (cifar10-cnn/2's system policy):
        # with three, one dissent still leaves a strict majority.
        k = res["decision"]["reviewers"]
        check(1 <= k <= 3, f"expected 1 to 3 reviewers per case, got {k}")
        predicted = res["prediction"]["class"]
        labels = [predicted, predicted, (predicted + 1) % 10] if k == 3 else [predicted] * k
        for i, who in enumerate(REVIEWERS[:k]):
            page.sign_in(tok(who))
            page.until(f"{who}: the claim button", lambda: page.visible("[data-action=claim]"))
            page.css("[data-action=claim]")[0].click()
            page.until(f"{who}: the case image", lambda: drv.execute_script(
                "const i=document.querySelector('img[data-role=case-image]'); return i && i.complete && i.naturalWidth > 0"))
            size = drv.execute_script(
                "const i=document.querySelector('img[data-role=case-image]');"
                "return [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width, getComputedStyle(i).imageRendering]")
            check(size[0] == 32 and size[1] == 32, f"{who}: the image is {size[0]}x{size[1]}, not the model's 32x32")
            check(size[2] >= 256, f"{who}: the image is shown {size[2]} px wide, not scaled up")
            check(size[3] in ("pixelated", "crisp-edges"), f"{who}: image-rendering is {size[3]!r}")
            check(not page.visible("[data-role=suggestion]"), f"{who}: the suggestion shows before labeling")
            check(len(page.css("[data-label]")) == 10, f"{who}: {len(page.css('[data-label]'))} label buttons, not 10")
            rid = page.css("[data-role=request-id]")
            check(rid and rid[0].get_attribute("textContent") == HOSTILE,
                  f"{who}: the hostile request id is not shown as text: {rid[0].get_attribute('textContent') if rid else None!r}")
            check(not page.xss(), "a client-sent id ran as HTML")
            lease = page.css("[data-role=lease]")[0].text
            check(lease.startswith("Lease "), f"{who}: no lease countdown ({lease!r})")
            if i == 0:
                page.shot("reviewer-blind")
            page.press(key_for(labels[i]))
            page.until(f"{who}: the suggestion after labeling", lambda: page.visible("[data-role=suggestion]"))
            check(f"Labeled case {case_id}" in page.status(), f"{who}: status after labeling: {page.status()!r}")
            if i == k - 1:
                page.shot("reviewer-revealed")
                check("resolved" in page.visible("[data-role=suggestion]")[0].text, "the last label did not show the resolution")
            # After the reveal the page claims the next case: here, none is left.
            page.until(f"{who}: the next claim", lambda: "No case is waiting" in (page.status() or ""))
        case = server.api(f"/v1/reviews/{case_id}")
        check(case["status"] == "resolved" and case["consensus"] == predicted,
              f"after {k} labels by key the case is {case['status']} / {case.get('consensus')}")

        # A feature case shows a table of the model's named features.
        feat = lidc_features(server)
        check(feat["decision"]["case_id"], "the LIDC case was not routed")
        page.sign_in(tok("dr-a"))
        page.until("the claim button", lambda: page.visible("[data-action=claim]"))
        page.css("[data-action=claim]")[0].click()
        page.until("the feature table", lambda: page.visible("[data-role=case-features]"))
        rows = page.css("[data-role=case-features] tbody tr")
        check(len(rows) == 8, f"{len(rows)} feature rows, not 8")
        check(not page.css("img[data-role=case-image]"), "a feature case shows an image")
        page.shot("reviewer-features")
        page.press("s")
        page.until("the release", lambda: "Released case" in (page.status() or ""))

        # Five reviewers tie a case (through the API); the adjudicator settles it in one click.
        tie = triage_image(server, "tie")["decision"]["case_id"]
        for who, label in zip(REVIEWERS, [0, 1, 2, 0, 1]):
            label_via_api(server, who, tie, label)
        check(server.api(f"/v1/reviews/{tie}")["status"] == "adjudication", "the tie case is not in adjudication")
        page.sign_in(tok("chief"))
        page.until("the adjudication view", lambda: page.visible(f"article[data-case='{tie}']"))
        card = page.css(f"article[data-case='{tie}']")[0]
        shown = sorted(r.text for r in card.find_elements(By.CSS_SELECTOR, "[data-role=reviewer-labels] tbody th"))
        check(shown == sorted(REVIEWERS), f"the tied case shows reviewers {shown}")
        page.until("the tied case's image", lambda: drv.execute_script(
            f"const i=document.querySelector(\"article[data-case='{tie}'] img[data-role=tied-image]\");"
            "return i && i.complete && i.naturalWidth === 32"))
        check(not page.css("[data-action=dashboard]"), "an adjudicator sees the dashboard")
        check(not page.css("[data-action=claim]"), "an adjudicator sees the claim button")
        page.shot("adjudicator")
        card.find_elements(By.CSS_SELECTOR, "[data-adjudicate='1']")[0].click()
        page.until("the adjudication", lambda: "Adjudicated case" in (page.status() or ""))
        done = server.api(f"/v1/reviews/{tie}")
        check(done["status"] == "resolved" and done["consensus"] == 1 and done["adjudicated_by"] == "chief",
              f"after one click the tie case is {done['status']} / {done.get('consensus')} / {done.get('adjudicated_by')}")

        # The admin dashboard equals the API.
        page.sign_in(tok("root"))
        page.until("the dashboard button", lambda: page.visible("[data-action=dashboard]"))
        page.css("[data-action=dashboard]")[0].click()
        page.until("the dashboard numbers", lambda: page.visible("[data-metric=resolved]"))
        stats = server.api("/v1/reviews/stats")
        num = lambda m: float(page.css(f"[data-metric={m}]")[0].text.split()[0])
        for m in ("pending", "resolved"):
            check(num(m) == stats["by_status"].get(m, 0), f"dashboard {m} {num(m)} != API {stats['by_status']}")
        metrics = urllib.request.urlopen(server.base + "/metrics").read().decode()
        routes = {"automate": 0.0, "review": 0.0}
        for line in metrics.splitlines():
            if line.startswith("triaged_decisions_total{"):
                for r in routes:
                    if f'route="{r}"' in line:
                        routes[r] += float(line.rsplit(" ", 1)[1])
        rate = routes["automate"] / max(1.0, sum(routes.values()))
        check(abs(num("automation-rate") - rate) < 1e-3, f"dashboard automation rate {num('automation-rate')} != {rate}")
        reviewers = {r["reviewer"]: r for r in server.api("/v1/reviews/reviewers")}
        table = {row.find_element(By.CSS_SELECTOR, "th").text: [td.text for td in row.find_elements(By.CSS_SELECTOR, "td")]
                 for row in page.css("[data-role=reviewers] tbody tr")}
        for who, r in reviewers.items():
            check(who in table and table[who][0] == str(r["labels"]) and table[who][2] == str(r["agreed"]),
                  f"reviewer {who}: dashboard {table.get(who)} vs API {r}")
        check(not page.xss(), "a client-sent id ran as HTML")
        page.shot("dashboard")
        # Live: a new routed case shows up without a reload.
        triage_image(server, "live")
        page.until("the live refresh", lambda: num("pending") == server.api("/v1/reviews/stats")["by_status"]["pending"])
    finally:
        drv.quit()
        server.stop()


def open_mode_with_suggestion(binary, shots, work):
    server = Server(binary, work, "[console]\nshow_suggestion = true\n",
                    {"TRIAGED__TRIAGE__MODE": "shadow", "TRIAGED__TRIAGE__REVIEWERS": "1"})
    drv = browser()
    page = Page(drv, server.base, shots)
    try:
        triage_image(server, "open", who=None)
        page.sign_in("Dr Open", field="subject")
        page.until("the claim button", lambda: page.visible("[data-action=claim]"))
        check("Dr Open" in page.css("#who")[0].text, "the signed-in name is not shown")
        page.css("[data-action=claim]")[0].click()
        page.until("the case image", lambda: page.visible("img[data-role=case-image]"))
        page.until("the suggestion before labeling (show_suggestion = true)", lambda: page.visible("[data-role=suggestion]"))
        page.shot("reviewer-suggestion-first")
        page.visible("[data-label='3']")[0].click()
        page.until("the label", lambda: "Labeled case" in (page.status() or ""))
        labeled = [e for e in server.api("/v1/audit", who=None) if e["action"] == "case.label"]
        check(labeled and labeled[-1]["actor"] == "Dr Open", f"the label was recorded as {labeled[-1:]} ")
    finally:
        drv.quit()
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("TRIAGED_BIN", "target/release/triaged"))
    ap.add_argument("--shots", default="target/console-screenshots")
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    step = "blind mode"
    try:
        with tempfile.TemporaryDirectory() as a:
            blind_mode(args.bin, args.shots, a)
        step = "open mode with the suggestion shown first"
        with tempfile.TemporaryDirectory() as b:
            open_mode_with_suggestion(args.bin, args.shots, b)
    except Failure as e:
        print(f"FAIL ({step}): {e}")
        return 1
    print(f"PASS: the console in Chromium (sign-in, blind labeling by key, image, features, "
          f"adjudication, dashboard = API, open mode); screenshots in {args.shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
