#!/usr/bin/env python3
"""Writes deploy/prometheus/alerts.test.yml: promtool unit tests that make every alert
of deploy/prometheus/alerts.yml fire on synthetic series, and show none firing on a
healthy stack.

promtool compares the rendered annotations too, so the expected annotations are taken
from alerts.yml and rendered here ({{ $labels.x }} only; the rules use no other
template). Edit a scenario below, or a runbook text in alerts.yml, then rerun:

    python3 tests/deploy/gen_alert_tests.py

and commit both files. tests/deploy/check.sh runs `promtool test rules` on the result.
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
OUT = ROOT / "deploy/prometheus/alerts.test.yml"

J = {"job": "triaged"}
A = {**J, "instance": "10.0.0.1:8080"}
B = {**J, "instance": "10.0.0.2:8080"}
LIDC = "lidc-malignancy"


def s(name, labels, values):
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def decisions(inst, route, reason, values):
    return s("triaged_decisions_total", {**inst, "model": LIDC, "route": route, "reason": reason}, values)


def buckets(name, labels, counts):
    """Cumulative histogram buckets: counts = {le: 'values'}."""
    return [s(name, {**labels, "le": le}, v) for le, v in counts.items()]


# Each scenario: a test group. alerts: (eval_time, alertname, [label sets expected]).
SCENARIOS = [
    {
        "name": "a daemon that cannot be scraped",
        "interval": "1m",
        "series": [s("up", A, "1 1 0x10"), s("up", B, "1x12")],
        "alerts": [("8m", "TriagedTargetDown", [A]), ("3m", "TriagedTargetDown", [])],
    },
    {
        "name": "a daemon whose default model never loads",
        "interval": "1m",
        "series": [s("triaged_ready", A, "0x10"), s("triaged_ready", B, "1x10")],
        "alerts": [("6m", "TriagedModelNotReady", [A])],
    },
    {
        "name": "reloads refused: the first one (a new series), then another",
        "interval": "1m",
        "series": [
            s("triaged_model_reloads_total", {**A, "model": LIDC, "outcome": "refused"}, "_x40 1x60 2x20"),
            s("triaged_model_reloads_total", {**A, "model": LIDC, "outcome": "ok"}, "1x120"),
        ],
        "alerts": [
            ("45m", "TriagedModelReloadRefused", [{**A, "model": LIDC, "outcome": "refused"}]),
            ("90m", "TriagedModelReloadRefused", []),
            ("105m", "TriagedModelReloadRefused", [{**A, "model": LIDC, "outcome": "refused"}]),
        ],
    },
    {
        "name": "one request in seven fails with 503",
        "interval": "1m",
        "series": [
            s("triaged_http_requests_total", {**A, "route": "/v1/triage", "method": "POST", "status": "200"}, "0+60x20"),
            s("triaged_http_requests_total", {**A, "route": "/v1/triage", "method": "POST", "status": "503"}, "0+10x20"),
        ],
        "alerts": [("15m", "TriagedHigh5xxRate", [J])],
    },
    {
        "name": "the inference queue overflows",
        "interval": "1m",
        "series": [
            s("triaged_rejected_requests_total", {**A, "model": LIDC, "reason": "queue_full"}, "0+5x30"),
            s("triaged_rejected_requests_total", {**A, "model": LIDC, "reason": "client_gone"}, "0+5x30"),
        ],
        "alerts": [("20m", "TriagedRequestsRejected", [{**J, "model": LIDC, "reason": "queue_full"}])],
    },
    {
        "name": "slow inference and slow triage requests",
        "interval": "1m",
        "series": buckets("triaged_inference_duration_seconds_bucket", {**A, "model": LIDC},
                          {"0.25": "0+1x30", "0.5": "0+1x30", "1": "0+100x30", "+Inf": "0+100x30"})
        + buckets("triaged_http_request_duration_seconds_bucket", {**A, "route": "/v1/triage"},
                  {"0.5": "0+1x30", "1": "0+1x30", "2.5": "0+100x30", "+Inf": "0+100x30"}),
        "alerts": [
            ("20m", "TriagedInferenceLatencyHigh", [{**J, "model": LIDC}]),
            ("20m", "TriagedTriageLatencyHigh", [{**J, "route": "/v1/triage"}]),
        ],
    },
    {
        # 5-minute samples: 6 automated and 4 reviewed cases a minute for a day, then
        # for two hours none automated and 10 reviewed a minute.
        "name": "automation rate collapses",
        "interval": "5m",
        "series": [
            decisions(A, "automate", "risk_certified", "0+30x288 8640x30"),
            decisions(A, "review", "risk_not_certified", "0+20x288 5760+50x30"),
        ],
        "alerts": [
            ("1560m", "TriagedAutomationRateCollapse", [{**J, "model": LIDC}]),
            ("1560m", "TriagedAutomationRateSpike", []),
        ],
    },
    {
        # 2 of 10 cases automated for a day, then 10 of 12.
        "name": "automation rate spikes",
        "interval": "5m",
        "series": [
            decisions(A, "automate", "risk_certified", "0+10x288 2880+50x30"),
            decisions(A, "review", "risk_not_certified", "0+40x288 11520+10x30"),
        ],
        "alerts": [
            ("1560m", "TriagedAutomationRateSpike", [{**J, "model": LIDC}]),
            ("1560m", "TriagedAutomationRateCollapse", []),
        ],
    },
    {
        "name": "audits show the automated error above alpha; the policy falls back",
        "interval": "1m",
        "series": [
            s("triaged_audit_error_rate", {**A, "model": LIDC, "bound": "lower"}, "0.08x10"),
            s("triaged_audit_error_rate", {**A, "model": LIDC, "bound": "upper"}, "0.21x10"),
            s("triaged_audit_error_rate", {**B, "model": LIDC, "bound": "lower"}, "0.08x10"),
            s("triaged_policy_fallback", {**A, "model": LIDC}, "0 1x10"),
            s("triaged_policy_fallback", {**B, "model": LIDC}, "0 0 1x10"),
        ],
        "alerts": [
            ("6m", "TriagedAuditedErrorAboveAlpha", [{**J, "model": LIDC}]),
            ("5m", "TriagedPolicyFallbackActive", [{**J, "model": LIDC}]),
        ],
    },
    {
        "name": "the oldest pending case passes the 4 h SLA (both daemons report it)",
        "interval": "1m",
        "series": [
            s("triaged_review_oldest_pending_seconds", A, "14000+60x20"),
            s("triaged_review_oldest_pending_seconds", B, "14000+60x20"),
        ],
        "alerts": [("15m", "TriagedReviewQueueOverSLA", [J]), ("8m", "TriagedReviewQueueOverSLA", [])],
    },
    {
        "name": "a case goes to dead_letter; cases wait for adjudication",
        "interval": "1m",
        "series": [
            s("triaged_review_queue_cases", {**A, "status": "dead_letter"}, "0x10 1x300"),
            s("triaged_review_queue_cases", {**A, "status": "adjudication"}, "2x310"),
            s("triaged_review_queue_cases", {**A, "status": "pending"}, "5x310"),
        ],
        "alerts": [
            ("15m", "TriagedReviewCasesDeadLettered", [J]),
            ("200m", "TriagedReviewCasesDeadLettered", []),
            ("200m", "TriagedAdjudicationBacklog", []),
            ("245m", "TriagedAdjudicationBacklog", [J]),
        ],
    },
    {
        "name": "a webhook receiver fails while another works",
        "interval": "1m",
        "series": [
            s("triaged_webhook_deliveries_total", {**A, "outcome": "failed"}, "0+1x60"),
            s("triaged_webhook_deliveries_total", {**A, "outcome": "delivered"}, "0+5x60"),
        ],
        "alerts": [
            ("45m", "TriagedWebhookDeliveryFailing", [J]),
            ("45m", "TriagedWebhookDeliveryDown", []),
        ],
    },
    {
        "name": "every webhook delivery fails",
        "interval": "1m",
        "series": [
            s("triaged_webhook_deliveries_total", {**A, "outcome": "failed"}, "0+1x60"),
            s("triaged_webhook_deliveries_total", {**A, "outcome": "delivered"}, "10x60"),
        ],
        "alerts": [("40m", "TriagedWebhookDeliveryDown", [J])],
    },
]

HEALTHY_SERIES = [
    s("up", A, "1x300"),
    s("triaged_ready", A, "1x300"),
    s("triaged_model_reloads_total", {**A, "model": LIDC, "outcome": "ok"}, "1x300"),
    s("triaged_http_requests_total", {**A, "route": "/v1/triage", "method": "POST", "status": "200"}, "0+60x300"),
    # A readiness probe answered 503 during start: health routes do not count.
    s("triaged_http_requests_total", {**A, "route": "/v2/health/ready", "method": "GET", "status": "503"}, "0+60x300"),
    s("triaged_rejected_requests_total", {**A, "model": LIDC, "reason": "queue_full"}, "0x300"),
    *buckets("triaged_inference_duration_seconds_bucket", {**A, "model": LIDC},
             {"0.001": "0+60x300", "0.5": "0+60x300", "+Inf": "0+60x300"}),
    *buckets("triaged_http_request_duration_seconds_bucket", {**A, "route": "/v1/triage"},
             {"0.01": "0+60x300", "1": "0+60x300", "+Inf": "0+60x300"}),
    decisions(A, "automate", "risk_certified", "0+6x300"),
    decisions(A, "review", "risk_not_certified", "0+4x300"),
    s("triaged_audit_error_rate", {**A, "model": LIDC, "bound": "lower"}, "0.004x300"),
    s("triaged_audit_error_rate", {**A, "model": LIDC, "bound": "upper"}, "0.03x300"),
    s("triaged_policy_fallback", {**A, "model": LIDC}, "0x300"),
    s("triaged_review_oldest_pending_seconds", A, "600x300"),
    s("triaged_review_queue_cases", {**A, "status": "dead_letter"}, "3x300"),
    s("triaged_review_queue_cases", {**A, "status": "adjudication"}, "0x300"),
    s("triaged_webhook_deliveries_total", {**A, "outcome": "failed"}, "0x300"),
    s("triaged_webhook_deliveries_total", {**A, "outcome": "delivered"}, "0+5x300"),
]


def main():
    rules = {
        r["alert"]: r
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }

    def render(text, labels):
        def sub(m):
            return labels.get(m.group(1), "")
        rest = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", sub, text)
        if "{{" in rest:
            sys.exit(f"unsupported template in: {text}")
        return rest

    def expected(name, label_sets):
        rule = rules[name]
        out = []
        for ls in label_sets:
            labels = {**ls, **rule.get("labels", {})}
            out.append({
                "exp_labels": labels,
                "exp_annotations": {k: render(v, labels) for k, v in rule.get("annotations", {}).items()},
            })
        return out

    fired = set()
    tests = []
    for sc in SCENARIOS:
        tests.append({
            "name": sc["name"],
            "interval": sc["interval"],
            "input_series": sc["series"],
            "alert_rule_test": [
                {"eval_time": t, "alertname": name, "exp_alerts": expected(name, ls)}
                for t, name, ls in sc["alerts"]
            ],
        })
        fired |= {name for _, name, ls in sc["alerts"] if ls}
    missing = set(rules) - fired
    if missing:
        sys.exit(f"alerts no scenario makes fire: {sorted(missing)}")
    tests.append({
        "name": "a healthy stack: nothing fires",
        "interval": "1m",
        "input_series": HEALTHY_SERIES,
        "alert_rule_test": [
            {"eval_time": "290m", "alertname": name, "exp_alerts": []} for name in sorted(rules)
        ],
    })
    doc = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    header = (
        "# promtool unit tests for alerts.yml: every alert fires on synthetic series, none on\n"
        "# a healthy stack. Run from this folder: promtool test rules alerts.test.yml\n"
        "# GENERATED by tests/deploy/gen_alert_tests.py (the scenarios live there; the\n"
        "# expected annotations are rendered from alerts.yml). Do not edit by hand.\n"
    )
    OUT.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True))
    print(f"wrote {OUT.relative_to(ROOT)}: {len(tests)} test groups, {len(rules)} alerts")


if __name__ == "__main__":
    main()
