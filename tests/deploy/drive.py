#!/usr/bin/env python3
"""HTTP driver for tests/deploy/check.sh (standard library only).

  drive.py resolve BASE            triage one case and label it until it resolves
                                   (open mode: X-Triaged-Subject names the reviewer)
  drive.py audit BASE              report audit outcomes for the default model
  drive.py traffic BASE SECONDS    triage requests until SECONDS have passed
  drive.py two-daemons BASE1 BASE2 TOKENS.json
                                   with bearer tokens: both daemons triage, and share
                                   one review queue

Exits non-zero with a message on the first unexpected answer.
"""
import json
import sys
import time
import urllib.error
import urllib.request

MODEL = "lidc-malignancy"
FEATURES = [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1]
REVIEWERS = ["dr-a", "dr-b", "dr-c", "dr-d", "dr-e", "dr-f"]


def call(method, url, body=None, subject=None, token=None, expect=(200,)):
    headers = {"Accept": "application/json"}
    data = None
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        # Every state-changing request is JSON, even an action without a body.
        data = json.dumps({} if body is None else body).encode()
        headers["Content-Type"] = "application/json"
    if subject:
        headers["X-Triaged-Subject"] = subject
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if status not in expect:
        sys.exit(f"{method} {url}: HTTP {status} (expected {expect}): {text[:300]}")
    return status, (json.loads(text) if text.strip() else None)


def triage(base, **auth):
    _, r = call("POST", f"{base}/v1/triage", {"instances": [{"features": FEATURES}]}, **auth)
    return r["results"][0]


def resolve(base):
    result = triage(base, subject="check-client")
    case_id = result["decision"].get("case_id")
    if not case_id:
        sys.exit(f"the case was not routed to review (run the daemon in shadow mode): {result['decision']}")
    model_class = result["prediction"]["class"]
    for i, reviewer in enumerate(REVIEWERS):
        status, claim = call("POST", f"{base}/v1/reviews/claim", subject=reviewer, expect=(200, 204))
        if status == 204 or claim["case"]["id"] != case_id:
            sys.exit(f"{reviewer} was not offered case {case_id}: {claim}")
        # Two labels agree with the model, the third differs: a majority that agrees
        # with the model, and a reviewer disagreement above 0.
        label = model_class if i < 2 else (model_class + 1) % 5
        _, out = call("POST", f"{base}/v1/reviews/{case_id}/labels", {"label": label}, subject=reviewer)
        if out["status"] == "resolved":
            print(f"case {case_id} resolved by {i + 1} reviewers, consensus {out.get('consensus')}")
            return
    sys.exit(f"case {case_id} not resolved after {len(REVIEWERS)} labels")


def audit(base):
    _, out = call("POST", f"{base}/v1/admin/models/{MODEL}/audit", {"correct": 40, "wrong": 1}, subject="check-admin")
    print(f"audit monitor: {out['audited']} outcomes, bounds [{out['lower']:.4f}, {out['upper']:.4f}]")


def traffic(base, seconds):
    end, n = time.time() + float(seconds), 0
    while time.time() < end:
        triage(base, subject="check-client")
        n += 1
        time.sleep(0.2)
    print(f"{n} triage requests")


def two_daemons(base1, base2, tokens_file):
    tokens = json.load(open(tokens_file))
    # Auth is on: no token, no triage.
    call("POST", f"{base1}/v1/triage", {"instances": [{"features": FEATURES}]}, expect=(401,))
    ids = []
    for base in (base1, base2):
        _, r = call("GET", f"{base}/v2/health/ready")
        d = triage(base, token=tokens["client"])["decision"]
        if not d.get("case_id"):
            sys.exit(f"{base}: expected the case to be routed to review (shadow mode): {d}")
        ids.append(d["case_id"])
    # One queue: a reviewer on daemon 2 is offered the case daemon 1 created first.
    status, claim = call("POST", f"{base2}/v1/reviews/claim", token=tokens["reviewer"], expect=(200, 204))
    if status == 204 or claim["case"]["id"] not in ids:
        sys.exit(f"reviewer on daemon 2 was not offered a case of this run ({ids}): {claim}")
    for base in (base1, base2):
        _, stats = call("GET", f"{base}/v1/reviews/stats", token=tokens["admin"])
        if stats["by_status"].get("pending", 0) < 2:
            sys.exit(f"{base}: the shared queue should hold both cases: {stats}")
    print(f"both daemons triaged (cases {ids[0][:8]}…, {ids[1][:8]}…) into one queue; "
          f"daemon 2 offered {claim['case']['id'][:8]}…")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"resolve": resolve, "audit": audit, "traffic": traffic, "two-daemons": two_daemons}[cmd](*args)


if __name__ == "__main__":
    main()
