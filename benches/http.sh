#!/usr/bin/env bash
# HTTP benchmark: starts `triaged serve` and measures, in one run on this machine,
# throughput and latency of
#   floor    GET /v2/health/live            (HTTP stack only: no body, no model)
#   triage   POST /v1/triage, automate_all  (parse + batch + model + policy, no queue write)
#   queued   POST /v1/triage, shipped policy (every case committed to SQLite, synchronous=FULL)
#   image    POST /v1/models/cifar10-cnn/triage, automate_all, one base64 JPEG (decode + CNN)
# and prints ratios, which are what to compare across machines (docs/architecture.md, docs/evidence.md).
#
#   benches/http.sh [SECONDS] [CONNECTIONS]      needs wrk (apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}; conns=${2:-32}
BIN=${TRIAGED_BIN:-./target/release/triaged}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release" >&2; exit 2; }
work=$(mktemp -d); trap 'kill ${pid:-} 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"instances":[{"features":[2193.25,22.61,5.5,234.6,110.2,3.0,0.65,1]}]}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$work/image.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"instances":[{"image":"$(base64 -w0 tests/fixtures/cifar/test/cat/0001.jpg)"}]}'
wrk.headers["Content-Type"] = "application/json"
LUA

# run NAME MODE PATH [script]: prints "NAME req/s p50_ms p99_ms"
run() {
  local name=$1 mode=$2 path=$3 script=${4:-}
  TRIAGED__TRIAGE__MODE=$mode TRIAGED__STORE__URL="sqlite://$work/$name.db" \
    "$BIN" serve --bind "127.0.0.1:$port" >"$work/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -fs "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency ${script:+-s "$script"} "http://127.0.0.1:$port$path")
  kill -TERM $pid; wait $pid || true
  python3 - "$name" <<PY
import re, sys
out = """$out"""
def ms(v):
    n, u = float(re.match(r"([\d.]+)", v).group(1)), re.sub(r"[\d.]", "", v)
    return n * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", out).group(1)); p99 = ms(re.search(r"99%\s+(\S+)", out).group(1))
print(f"{sys.argv[1]} {rps:.0f} {p50:.3f} {p99:.3f}")
PY
}

results=$( {
  run floor automate_all /v2/health/live
  run triage automate_all /v1/triage "$work/post.lua"
  run queued policy /v1/triage "$work/post.lua"
  run image automate_all /v1/models/cifar10-cnn/triage "$work/image.lua"
} )
python3 - <<PY
rows = {r.split()[0]: list(map(float, r.split()[1:])) for r in """$results""".strip().splitlines()}
print(f"{'':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
for k, (rps, p50, p99) in rows.items():
    print(f"{k:8} {rps:9.0f} {p50:8.3f} {p99:8.3f}")
f, t, q, i = rows["floor"][0], rows["triage"][0], rows["queued"][0], rows["image"][0]
print(f"ratios: triage/floor {t/f:.2f}  queued/triage {q/t:.2f}  image/triage {i/t:.3f}  ({$conns} connections, ${secs}s each, one case per request)")
PY
