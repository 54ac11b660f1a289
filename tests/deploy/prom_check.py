#!/usr/bin/env python3
"""Prometheus HTTP API checks for tests/deploy/check.sh (standard library only).

  prom_check.py query PROM EXPR        print the first sample's value of an instant query, or
                                       nothing (exit 0) when it has no result
  prom_check.py rules PROM             every rule group of alerts.yml is loaded and every rule
                                       evaluated without error
  prom_check.py dashboard PROM FILE    every panel's every query returns data; a panel fails,
                                       by title, when a query has no result or only NaN/Inf

Dashboard variables are substituted as Grafana would for "All": a variable's allValue
(".*"), and $__rate_interval by 1m (four times the check's 1 s scrape interval and
more than the run, so every rate has samples; Grafana derives it from the scrape
interval the same way).
"""
import json
import math
import re
import sys
import urllib.parse
import urllib.request


def api(prom, path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def query(prom, expr):
    data = api(prom, "/api/v1/query", query=expr)
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def substitute(expr, variables):
    expr = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    for name, value in variables.items():
        expr = re.sub(r"\$\{" + name + r"(:[a-z]+)?\}|\$" + name + r"\b", value, expr)
    if "$" in expr.replace("$__", ""):
        raise SystemExit(f"unsubstituted variable in: {expr}")
    return expr


def panels(dash):
    for p in dash["panels"]:
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def dashboard(prom, path):
    dash = json.load(open(path))
    variables = {}
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "datasource":
            continue
        if not v.get("includeAll") or "allValue" not in v:
            raise SystemExit(f"variable {v['name']}: give it includeAll and an allValue for this check")
        variables[v["name"]] = v["allValue"]
    failed, n = [], 0
    for p in panels(dash):
        for t in p.get("targets", []):
            n += 1
            expr = substitute(t["expr"], variables)
            result = query(prom, expr)
            finite = [r for r in result if math.isfinite(float(r["value"][1]))]
            status = "ok" if finite else ("only NaN/Inf" if result else "no data")
            print(f"  {'ok  ' if finite else 'FAIL'} {p['title']} [{t['refId']}]: "
                  f"{len(finite)} series" + ("" if finite else f" ({status}): {expr}"))
            if not finite:
                failed.append(f"{p['title']} [{t['refId']}]")
    if failed:
        raise SystemExit(f"dashboard panels without data: {', '.join(failed)}")
    print(f"every query of the dashboard's panels returns data ({n} queries)")


def rules(prom):
    groups = api(prom, "/api/v1/rules")["groups"]
    bad, n = [], 0
    for g in groups:
        for r in g["rules"]:
            n += 1
            if r.get("health") != "ok":
                bad.append(f"{r['name']}: {r.get('health')} {r.get('lastError', '')}")
    if not groups or bad:
        raise SystemExit("rules not loaded or failing: " + ("; ".join(bad) or "no rule groups"))
    firing = sorted({a["labels"]["alertname"] for a in api(prom, "/api/v1/alerts")["alerts"]})
    print(f"{len(groups)} rule groups, {n} rules evaluated without error; active alerts: {firing or 'none'}")


def main():
    cmd, prom = sys.argv[1], sys.argv[2].rstrip("/")
    if cmd == "query":
        result = query(prom, sys.argv[3])
        if result:
            print(result[0]["value"][1])
    elif cmd == "rules":
        rules(prom)
    elif cmd == "dashboard":
        dashboard(prom, sys.argv[3])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
