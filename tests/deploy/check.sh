#!/usr/bin/env bash
# Checks deploy/ on a machine without a container engine (issue 17, "Deploy and
# operate"). Run from the repository root after `cargo build --release`:
#
#   bash tests/deploy/check.sh
#
#  1. promtool: the alert rules, their unit tests (every alert fires on synthetic
#     series, none on a healthy stack), the Prometheus config.
#  2. Every YAML/JSON file under deploy/ parses; the compose, k8s and dashboard files
#     have the structure the deployment relies on.
#  3. A real Prometheus (Debian's package) scrapes a running daemon (shadow mode,
#     temporary SQLite queue) that triaged cases, had two resolved by three reviewers
#     each and received audit outcomes; the alert rules evaluate without error, and
#     every query of every dashboard panel returns data.
#  4. Two daemons started with the environment and config file deploy/compose.yaml
#     gives its triaged services (tests/deploy/compose_env.py) on one fresh PostgreSQL
#     database both become ready, refuse callers without a token, triage, and share
#     one review queue; SIGTERM stops both with status 0.
#  5. The k8s ConfigMap + Secret, merged as the Deployment's init container does,
#     is a config the daemon accepts once the Secret's placeholders are replaced, and
#     refuses (fails closed) while they are not.
#
# Needs: python3 (pyyaml is installed with pip if missing), curl, psql and a
# PostgreSQL with trust auth at TRIAGED_DEPLOY_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres; a fresh database is created and
# dropped), prometheus/promtool (apt-get install prometheus, done here when missing
# and run as root). TRIAGED_BIN picks another binary. Every wait is bounded; every
# process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${TRIAGED_BIN:-./target/release/triaged}
PG_ADMIN_URL=${TRIAGED_DEPLOY_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
HERE=tests/deploy
T0=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/triaged-deploy-check.XXXXXX")
PIDS=()
LOGS=()
DB=

log() { printf '[%3ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$DB" ]; then
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ "$rc" -ne 0 ]; then
    local f
    for f in "${LOGS[@]}"; do
      [ -s "$f" ] && { echo "--- last lines of $(basename "$f")"; tail -n 15 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS PID WHAT: until URL answers 2xx; fails if PID exits first.
wait_http() {
  local url=$1 secs=$2 pid=$3 what=$4 i
  for i in $(seq $((secs * 5))); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || fail "$what exited before $url answered"
    sleep 0.2
  done
  fail "$what: no answer from $url within ${secs}s"
}

# wait_prom EXPR SECONDS: until the instant query EXPR has a result.
wait_prom() {
  local expr=$1 secs=$2 i
  for i in $(seq $((secs * 4))); do
    [ -n "$(python3 "$HERE/prom_check.py" query "$PROM" "$expr")" ] && return 0
    sleep 0.25
  done
  fail "Prometheus: no result for '$expr' within ${secs}s"
}

# forget PID: a process this script has reaped is no longer its to stop (its id may
# be reused).
forget() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# stop PID WHAT: SIGTERM, and the daemon must exit 0 within 40 s (the drain).
stop() {
  local pid=$1 what=$2 rc=0 i
  kill "$pid" 2>/dev/null || true
  for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; fail "$what still running 40 s after SIGTERM"; }
  wait "$pid" || rc=$?
  forget "$pid"
  [ "$rc" -eq 0 ] || fail "$what exited with status $rc after SIGTERM"
}

# ---------------------------------------------------------------- prerequisites
[ -f Cargo.toml ] || fail "run from the repository root"
[ -x "$BIN" ] || fail "no binary at $BIN: run cargo build --release first (or set TRIAGED_BIN)"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's prometheus package (promtool, prometheus)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi
command -v promtool >/dev/null && command -v prometheus >/dev/null \
  || fail "promtool and prometheus are needed (Debian: apt-get install prometheus)"
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml >/dev/null 2>&1 \
  || fail "pyyaml is needed (pip install pyyaml)"
command -v psql >/dev/null || fail "psql is needed (Debian: postgresql-client)"

# ---------------------------------------------------------------- 1. promtool
log "1. promtool"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)
promtool check config deploy/prometheus/prometheus.yml

# ---------------------------------------------------------------- 2. files parse
log "2. YAML/JSON under deploy/"
python3 - <<'PY'
import glob, json, sys, tomllib
import yaml

def die(msg):
    sys.exit(f"FAIL: {msg}")

n = 0
docs = {}
for f in sorted(glob.glob("deploy/**/*.y*ml", recursive=True) + glob.glob("deploy/**/.*.y*ml", recursive=True)):
    try:
        docs[f] = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except yaml.YAMLError as e:
        die(f"{f}: {e}")
    n += 1
for f in sorted(glob.glob("deploy/**/*.json", recursive=True)):
    try:
        json.load(open(f))
    except ValueError as e:
        die(f"{f}: {e}")
    n += 1

# compose: two daemons, PostgreSQL with a healthcheck they wait for, Prometheus, Grafana.
c = docs["deploy/compose.yaml"][0]
s = c["services"]
for name in ("triaged-1", "triaged-2", "postgres", "prometheus", "grafana"):
    name in s or die(f"compose.yaml: no service {name}")
"healthcheck" in s["postgres"] or die("compose.yaml: postgres has no healthcheck")
for d in ("triaged-1", "triaged-2"):
    s[d]["depends_on"]["postgres"]["condition"] == "service_healthy" or die(f"compose.yaml: {d} must wait for healthy postgres")
prom = docs["deploy/prometheus/prometheus.yml"][0]
targets = [t for j in prom["scrape_configs"] if j["job_name"] == "triaged" for sc in j["static_configs"] for t in sc["targets"]]
set(targets) >= {"triaged-1:8080", "triaged-2:8080"} or die(f"prometheus.yml scrapes {targets}, not both daemons")

# k8s: the kinds, probes on the OIP health endpoints, a grace period covering the drain.
k8s = {d["kind"]: d for f, ds in docs.items() if f.startswith("deploy/k8s/") for d in ds}
for kind in ("Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
    kind in k8s or die(f"deploy/k8s: no {kind}")
k8s["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2" or die("HPA is not autoscaling/v2")
dep = k8s["Deployment"]
pod = dep["spec"]["template"]["spec"]
ctr = next(x for x in pod["containers"] if x["name"] == "triaged")
ctr["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" or die("readiness probe is not /v2/health/ready")
ctr["livenessProbe"]["httpGet"]["path"] == "/v2/health/live" or die("liveness probe is not /v2/health/live")
"requests" in ctr["resources"] or die("no resource requests")
cfg = tomllib.loads(k8s["ConfigMap"]["data"]["config.toml"])
drain = cfg.get("server", {}).get("shutdown_timeout_seconds", 30)
pre = ctr["lifecycle"]["preStop"]["exec"]["command"]
pre_s = int(pre[-1]) if pre[0] == "sleep" else 0
pod["terminationGracePeriodSeconds"] > drain + pre_s or die(
    f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= preStop {pre_s} s + drain {drain} s")
dep["spec"]["replicas"] >= 2 or die("fewer than 2 replicas")
dep["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/scrape") == "true" or die("no scrape annotation")

# dashboard: every panel has a query.
dash = json.load(open("deploy/grafana/triaged.json"))
ps = [p for p in dash["panels"] if p["type"] != "row"]
empty = [p["title"] for p in ps if not p.get("targets")]
empty and die(f"dashboard panels without a query: {empty}")
alerts = [r["alert"] for g in docs["deploy/prometheus/alerts.yml"][0]["groups"] for r in g["rules"] if "alert" in r]
norunbook = [r["alert"] for g in docs["deploy/prometheus/alerts.yml"][0]["groups"] for r in g["rules"]
             if "alert" in r and "runbook" not in r.get("annotations", {})]
norunbook and die(f"alerts without a runbook: {norunbook}")
print(f"{n} files parse; compose: {len(s)} services; k8s: {', '.join(sorted(k8s))}; "
      f"dashboard: {len(ps)} panels; {len(alerts)} alerts, each with a runbook")
PY

# ---------------------------------------------------------------- 3. Prometheus
log "3. a real Prometheus scraping a running daemon; every dashboard panel has data"
P1=$(free_port)
LOGS+=("$WORK/daemon.log" "$WORK/prometheus.log")
env -i PATH="$PATH" HOME="${HOME:-/root}" \
  TRIAGED__TRIAGE__MODE=shadow \
  TRIAGED__STORE__URL="sqlite://$WORK/queue.db" \
  TRIAGED__STORE__RESCUE_INTERVAL_SECONDS=1 \
  "$BIN" serve --bind "127.0.0.1:$P1" >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
PIDS+=("$DAEMON")
BASE="http://127.0.0.1:$P1"
wait_http "$BASE/v2/health/ready" 60 "$DAEMON" "triaged serve"

PP=$(free_port)
PROM="http://127.0.0.1:$PP"
# deploy/prometheus/prometheus.yml with its rule file, scraping this daemon every second.
python3 - "$WORK/prometheus.yml" "127.0.0.1:$P1" <<'PY'
import os, sys
import yaml
out, target = sys.argv[1], sys.argv[2]
cfg = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
cfg["scrape_configs"] = [j for j in cfg["scrape_configs"] if j["job_name"] == "triaged"]
cfg["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
cfg["rule_files"] = [os.path.abspath("deploy/prometheus/" + f) for f in cfg["rule_files"]]
yaml.safe_dump(cfg, open(out, "w"))
PY
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PP" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PIDS+=("$PROM_PID")
wait_http "$PROM/-/ready" 30 "$PROM_PID" "prometheus"
wait_prom 'up{job="triaged"} == 1' 20
log "   scraping; one case resolved by its reviewers, audit outcomes reported"
python3 "$HERE/drive.py" resolve "$BASE"
python3 "$HERE/drive.py" audit "$BASE"
# The agreement counter is born at the first resolution; a second one, after it was
# scraped, gives increase() over it something to count.
wait_prom 'triaged_review_model_agreement_total' 20
python3 "$HERE/drive.py" resolve "$BASE"
python3 "$HERE/drive.py" traffic "$BASE" 60 >"$WORK/traffic.log" 2>&1 &
TRAFFIC=$!
PIDS+=("$TRAFFIC")
wait_prom 'sum(triaged_review_model_agreement_total) >= 2' 20
wait_prom 'increase(triaged_instances_total{model="lidc-malignancy"}[1m]) >= 5' 20
sleep 2.5  # two more scrapes (and rule evaluations) at the 1 s interval
python3 "$HERE/prom_check.py" rules "$PROM"
python3 "$HERE/prom_check.py" dashboard "$PROM" deploy/grafana/triaged.json
kill "$TRAFFIC" 2>/dev/null || true
wait "$TRAFFIC" 2>/dev/null || true
forget "$TRAFFIC"
stop "$PROM_PID" prometheus
stop "$DAEMON" "triaged serve (SQLite)"

# ---------------------------------------------------------------- 4. two daemons, PostgreSQL
log "4. two daemons with compose's environment on one PostgreSQL"
psql "$PG_ADMIN_URL" -qAtc 'SELECT 1' >/dev/null 2>&1 || fail "PostgreSQL not reachable at $PG_ADMIN_URL"
DB="triaged_deploy_check_$$_$RANDOM"
psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$DB\"" >/dev/null
STORE_URL="${PG_ADMIN_URL%/*}/$DB"
mkdir -p "$WORK/compose"
# Fresh tokens: the hashes go where deploy/.env puts them, the tokens to the driver.
HASHES=$(python3 - "$WORK/tokens.json" <<'PY'
import hashlib, json, secrets, sys
tokens = {r: secrets.token_hex(32) for r in ("client", "admin", "reviewer", "reviewer2", "reviewer3")}
json.dump(tokens, open(sys.argv[1], "w"))
var = {"client": "CLIENT", "admin": "ADMIN", "reviewer": "REVIEWER1", "reviewer2": "REVIEWER2", "reviewer3": "REVIEWER3"}
print(" ".join(f"TRIAGED_{var[r]}_TOKEN_SHA256={hashlib.sha256(t.encode()).hexdigest()}" for r, t in tokens.items()))
PY
)
# shellcheck disable=SC2086
python3 "$HERE/compose_env.py" "$WORK/compose" "$STORE_URL" POSTGRES_PASSWORD=unused-here $HASHES
start_compose_daemon() {
  env -i PATH="$PATH" HOME="${HOME:-/root}" bash -c '. "$1" && exec "$2" serve --bind "$3"' _ \
    "$WORK/compose/compose.env" "$BIN" "127.0.0.1:$1" >"$WORK/$2.log" 2>&1 &
}
PA=$(free_port); PB=$(free_port)
LOGS+=("$WORK/triaged-1.log" "$WORK/triaged-2.log")
# Both at once: their migrations race, as they do when compose starts them.
start_compose_daemon "$PA" triaged-1; D1=$!; PIDS+=("$D1")
start_compose_daemon "$PB" triaged-2; D2=$!; PIDS+=("$D2")
wait_http "http://127.0.0.1:$PA/v2/health/ready" 60 "$D1" "triaged-1"
wait_http "http://127.0.0.1:$PB/v2/health/ready" 60 "$D2" "triaged-2"
log "   both ready"
python3 "$HERE/drive.py" two-daemons "http://127.0.0.1:$PA" "http://127.0.0.1:$PB" "$WORK/tokens.json"
stop "$D1" triaged-1
stop "$D2" triaged-2
psql "$PG_ADMIN_URL" -qc "DROP DATABASE \"$DB\" WITH (FORCE)" >/dev/null && DB=

# ---------------------------------------------------------------- 5. k8s config
log "5. the k8s ConfigMap + Secret as the daemon's config"
python3 - "$WORK" <<'PY'
import hashlib, sys
import yaml
work = sys.argv[1]
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]["config.toml"]
auth = yaml.safe_load(open("deploy/k8s/secret.yaml"))["stringData"]["auth.toml"]
# As the init container does: cat config.toml auth.toml > triaged.toml
open(f"{work}/k8s-placeholders.toml", "w").write(cm + auth)
import re
filled = re.sub(r"REPLACE_WITH_SHA256_HEX_OF_\w+", lambda m: hashlib.sha256(m.group(0).encode()).hexdigest(), auth)
open(f"{work}/k8s.toml", "w").write(cm + filled)
PY
PK=$(free_port)
LOGS+=("$WORK/k8s.log")
k8s_daemon() {
  env -i PATH="$PATH" HOME="${HOME:-/root}" TRIAGED_CONFIG="$1" \
    TRIAGED__STORE__URL="sqlite://$WORK/k8s.db" TRIAGED__MODELS__DIR="$PWD/models" \
    "$BIN" serve --bind "127.0.0.1:$PK" >"$WORK/k8s.log" 2>&1 &
}
k8s_daemon "$WORK/k8s-placeholders.toml"; DK=$!; PIDS+=("$DK")
for _ in $(seq 50); do kill -0 "$DK" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$DK" 2>/dev/null; then fail "the Secret's placeholder tokens were accepted: the daemon should refuse them"; fi
wait "$DK" 2>/dev/null || true
forget "$DK"
grep -q "sha256" "$WORK/k8s.log" || fail "the daemon refused the placeholder Secret, but not because of the tokens"
echo "placeholder Secret refused: $(grep -o 'auth.tokens[^"]*' "$WORK/k8s.log" | head -1)"
k8s_daemon "$WORK/k8s.toml"; DK=$!; PIDS+=("$DK")
wait_http "http://127.0.0.1:$PK/v2/health/ready" 60 "$DK" "triaged with the k8s config"
stop "$DK" "triaged with the k8s config"
echo "ConfigMap + Secret (placeholders replaced) accepted; ready"

log "PASS: deploy checks (promtool, files, Prometheus + dashboard, two daemons on PostgreSQL, k8s config)"
