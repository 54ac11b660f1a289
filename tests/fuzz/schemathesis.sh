#!/usr/bin/env bash
# Property-based fuzzing of the triaged HTTP API with schemathesis (for CI).
#
# Run from anywhere after `cargo build --release`:
#     tests/fuzz/schemathesis.sh
#
# It starts ./target/release/triaged on a free loopback port with a throw-away
# SQLite review queue and no auth tokens (loopback => open mode, every caller is an
# admin), waits for GET /v2/health/ready, runs schemathesis over every operation of
# /openapi.json with every check, a fixed seed and bounded examples, then sends
# SIGTERM and requires the server to exit (status 0) within 10 s.
#
# Exit status: non-zero if schemathesis reports a failure or errors, if the server
# does not become ready, or if it does not stop cleanly on SIGTERM.
#
# Knobs (environment):
#   SCHEMATHESIS_SEED          hypothesis seed                   (default 20240611)
#   SCHEMATHESIS_MAX_EXAMPLES  examples per operation and phase  (default 150)
#   SCHEMATHESIS_WORKERS       1 or 2                            (default 1: see below)
#   SCHEMATHESIS_TIMEOUT       hard bound on schemathesis, s     (default 300)
#   SCHEMATHESIS_REPORT_DIR    where junit/ndjson reports go     (default: a temp dir, removed)
#   TRIAGED_BIN                the server binary                 (default ./target/release/triaged)
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
SEED="${SCHEMATHESIS_SEED:-20240611}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-150}"
# One worker by default: with two, two operations can build Hypothesis' recursive
# "any JSON value" strategy at once (the OIP tensors' free-form `data`/`parameters`),
# and CPython 3.11's ast.parse, which Hypothesis runs to describe the strategy's
# lambdas, is not thread-safe ("SystemError: AST constructor recursion depth
# mismatch", python/cpython#106905): a runtime error of the tool, not of the API.
# One worker is also as fast here (the server shares the machine's cores) and makes
# the fixed seed reproduce the same run.
WORKERS="${SCHEMATHESIS_WORKERS:-1}"
ST_TIMEOUT="${SCHEMATHESIS_TIMEOUT:-300}"
READY_TIMEOUT=90
STOP_TIMEOUT=10

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="${TRIAGED_BIN:-./target/release/triaged}"

log() { printf '[fuzz] %s\n' "$*" >&2; }

if [[ ! -x "$BIN" ]]; then
    log "$BIN not found: run 'cargo build --release' first"
    exit 2
fi
for tool in python3 curl timeout; do
    command -v "$tool" >/dev/null || { log "needs $tool"; exit 2; }
done

# --- schemathesis, pinned -----------------------------------------------------------
installed="$(python3 -m pip show schemathesis 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [[ "$installed" != "$SCHEMATHESIS_VERSION" ]]; then
    log "installing schemathesis==$SCHEMATHESIS_VERSION (found: ${installed:-none})"
    python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" \
        || python3 -m pip install --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
fi
# The console script may live in a bin dir not on PATH (pip --user); go through python.
ST=(python3 -m schemathesis.cli)
"${ST[@]}" --version >&2

# --- the server ----------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/triaged-fuzz.XXXXXX")"
SERVER_PID=""
ST_PID=""
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-$TMP/report}"
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"

cleanup() {
    local rc=$?
    trap - INT TERM
    if [[ -n "$ST_PID" ]] && kill -0 "$ST_PID" 2>/dev/null; then
        kill -TERM "$ST_PID" 2>/dev/null || true   # timeout(1) passes it on to schemathesis
        wait "$ST_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -f "$TMP/server.log" ]]; then
        log "server log (last 40 lines):"
        tail -n 40 "$TMP/server.log" >&2 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"

# No auth tokens and a loopback bind: open mode. Drop anything from the caller's
# environment that could change that (a config file, other TRIAGED__* overrides).
unset TRIAGED_CONFIG TRIAGED_BIND
for name in $(compgen -e); do
    if [[ "$name" == TRIAGED__* ]]; then unset "$name"; fi
done
export TRIAGED__STORE__URL="sqlite://$TMP/q.db"

log "starting $BIN serve --bind 127.0.0.1:$PORT (store $TRIAGED__STORE__URL)"
"$BIN" serve --bind "127.0.0.1:$PORT" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -o /dev/null "$BASE/v2/health/ready" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server exited before it became ready"
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "server not ready after ${READY_TIMEOUT}s"
        exit 1
    fi
    sleep 0.5
done
log "ready at $BASE"

# --- schemathesis --------------------------------------------------------------------
# Every operation (no filters), every check, every phase; fixed seed, bounded
# examples, no example database (so a run does not depend on the previous one).
ST_ARGS=(
    --config-file "$ROOT/tests/fuzz/schemathesis.toml"
    run "$BASE/openapi.json"
    --checks all
    --continue-on-failure
    --phases examples,coverage,fuzzing,stateful
    --seed "$SEED"
    --max-examples "$MAX_EXAMPLES"
    --workers "$WORKERS"
    --generation-database none
    --suppress-health-check all
    --request-timeout 10
    --max-response-time 10
    --no-color
    --report junit,ndjson
    --report-dir "$REPORT_DIR"
)
log "schemathesis ${ST_ARGS[*]}"
st_rc=0
start=$SECONDS
# Run inside the report folder, so hypothesis' and schemathesis' caches (.hypothesis/,
# .schemathesis/, used by `st replay`) land beside the reports, not in the checkout.
# In the background + wait, so a signal to this script runs the trap at once.
(cd "$REPORT_DIR" && exec timeout --signal=TERM --kill-after=15 "$ST_TIMEOUT" "${ST[@]}" "${ST_ARGS[@]}") &
ST_PID=$!
wait "$ST_PID" || st_rc=$?
ST_PID=""
log "schemathesis exited $st_rc after $((SECONDS - start))s"
if [[ $st_rc -eq 124 || $st_rc -eq 137 ]]; then
    log "schemathesis ran past ${ST_TIMEOUT}s"
fi

# --- graceful stop -------------------------------------------------------------------
log "SIGTERM to the server (pid $SERVER_PID)"
kill -TERM "$SERVER_PID"
stop_start=$(date +%s.%N)
stopped=0
for _ in $(seq $((STOP_TIMEOUT * 10))); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=1; break; fi
    sleep 0.1
done
if ((stopped == 0)); then
    log "FAIL: server still running ${STOP_TIMEOUT}s after SIGTERM"
    exit 1
fi
server_rc=0
wait "$SERVER_PID" || server_rc=$?
SERVER_PID=""
log "server exited with status $server_rc in $(python3 -c "import time; print(f'{time.time() - $stop_start:.2f}')")s after SIGTERM"
if [[ $server_rc -ne 0 ]]; then
    log "FAIL: server exit status $server_rc after SIGTERM (expected 0, a graceful stop)"
    exit 1
fi

if [[ $st_rc -ne 0 ]]; then
    log "FAIL: schemathesis reported failures (exit $st_rc)"
    exit "$st_rc"
fi
log "OK"
