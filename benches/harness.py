"""The benchmark harness behind `benches/run` (see the README's "Benchmarks").

Builds the release binary, starts everything it measures on loopback, drives it
with oha (closed loop for throughput, constant rate for latency; oha's JSON
output is read, never its text), repeats the whole set REPS times (ratios are
taken within one repetition, from measurements made minutes apart at most), and
writes benches/results.json ({median, min, max} per figure) and a table, also
into the README between the `bench:begin`/`bench:end` markers.

Standard library only: it runs on the system python3. Knobs (environment):
  BENCH_SECONDS      seconds per measured point (default 8)
  BENCH_REPS         repetitions (default 3)
  BENCH_CONNECTIONS  closed-loop connections (default 32)
  BENCH_TOOLS        where oha is installed if it is not on PATH (~/.cache/triaged-bench)
  BENCH_VENV         the peer's virtualenv (benches/.venv)
  BENCH_PG_URL       PostgreSQL server for the scale-out point (postgres://postgres@127.0.0.1:5432)
  BENCH_BUILD=0      skip `cargo build --release --locked` (use TRIAGED_BIN or target/release/triaged)
  BENCH_README=0     do not rewrite the README's table
  OHA                path to an oha binary
"""

import base64
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WARMUP = 1.0
TOOLS = Path(os.environ.get("BENCH_TOOLS", Path.home() / ".cache" / "triaged-bench"))
VENV = Path(os.environ.get("BENCH_VENV", BENCHES / ".venv"))
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
OHA_VERSION = "1.16.0"
MODEL = "lidc-malignancy"
CNN = "cifar10-cnn"
# Open-loop rate, as a fraction of the ceiling's closed-loop throughput.
HALF = 0.5
# Outputs of the two servers must agree to this (absolute).
TOLERANCE = 1e-4

GOALS = {
    "ceiling_ratio": (">=", 0.6),
    "peer_ratio": (">=", 10.0),
    "p99_ms_at_half": ("<=", 2.0),
    "errors": ("==", 0),
    "cnn_batching_gain": (">=", 2.0),
    "policy_overhead_ratio": (">=", 0.95),
    "enqueue_per_s": (">=", 5000.0),
    "scale_out_ratio": ("report", None),
    # The same open loop against the parse-only route: what the load tool, the
    # kernel and the HTTP stack alone cost in tail latency at that rate.
    "p99_floor_ms": ("report", None),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- tools

def build():
    if os.environ.get("BENCH_BUILD", "1") != "0":
        run(["cargo", "build", "--release", "--locked"], cwd=ROOT)
    binary = Path(os.environ.get("TRIAGED_BIN", ROOT / "target" / "release" / "triaged"))
    if not binary.exists():
        sys.exit(f"no triaged binary at {binary}")
    return binary


def oha():
    if os.environ.get("OHA"):
        return os.environ["OHA"]
    local = TOOLS / "oha" / "bin" / "oha"
    if local.exists():
        return str(local)
    found = shutil.which("oha")
    if found:
        return found
    log(f"installing oha {OHA_VERSION} from crates.io into {local.parent.parent} (once; a few minutes)")
    # Without a TLS feature oha 1.16 does not compile; native-tls links the system OpenSSL
    # (libssl-dev) instead of compiling a crypto library.
    run(["cargo", "install", "oha", "--locked", "--version", OHA_VERSION, "--no-default-features", "--features", "native-tls",
         "--root", str(local.parent.parent)])
    return str(local)


def venv():
    py = VENV / "bin" / "python"
    req = BENCHES / "peer" / "requirements.txt"
    stamp = VENV / ".requirements-sha256"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    if not py.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    if not stamp.exists() or stamp.read_text() != digest:
        run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(req)])
        stamp.write_text(digest)
    return VENV


def machine():
    def first(path, key):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return None

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return None

    mem_kb = first("/proc/meminfo", "MemTotal")
    return {
        "cpu": first("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "kernel": platform.release(),
        "rustc": out(["rustc", "--version"]),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "load_average_at_start": list(os.getloadavg()),
        "commit": out(["git", "rev-parse", "--short", "HEAD"]),
    }


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


class Proc:
    """A server this harness started, in its own process group, stopped by its id."""

    def __init__(self, name, cmd, env, log_path, ready_urls):
        self.name = name
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.time() + 120
        for url in ready_urls:
            while True:
                if self.p.poll() is not None:
                    raise RuntimeError(f"{name} exited during start; see {log_path}")
                try:
                    if http("GET", url, timeout=2)[0] == 200:
                        break
                except (urllib.error.URLError, OSError):
                    pass
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} not ready at {url} within 120 s; see {log_path}")
                time.sleep(0.1)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()


class Bench:
    def __init__(self, binary, oha_bin, work):
        self.binary = binary
        self.oha = oha_bin
        self.work = work
        self.procs = []
        self.databases = []

    def triaged(self, name, env_extra, extra_ready=()):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGED__")}
        env.update({
            "TRIAGED__SERVER__WORKERS": "2",
            "TRIAGED__STORE__URL": f"sqlite://{self.work / (name + '.db')}",
        })
        env.update(env_extra)
        base = f"http://127.0.0.1:{port}"
        ready = [f"{base}/v2/health/ready"] + [f"{base}{p}" for p in extra_ready]
        proc = Proc(name, [str(self.binary), "serve", "--bind", f"127.0.0.1:{port}"], env,
                    self.work / f"{name}.log", ready)
        self.procs.append(proc)
        return base, proc

    def peer(self, onnx_path):
        port = free_port()
        env = dict(os.environ, PEER_BUNDLE=str(ROOT / "models" / MODEL / "1"), PEER_ONNX=str(onnx_path))
        cmd = [str(VENV / "bin" / "uvicorn"), "server:app", "--app-dir", str(BENCHES / "peer"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
               "--log-level", "warning", "--no-access-log"]
        base = f"http://127.0.0.1:{port}"
        proc = Proc("peer", cmd, env, self.work / "peer.log", [f"{base}/health"])
        self.procs.append(proc)
        return base, proc

    def stop(self, proc):
        proc.stop()
        self.procs.remove(proc)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)
        for db in self.databases:
            self.drop_database(db)

    # PostgreSQL: a fresh database per point, dropped at the end.
    def create_database(self, name):
        subprocess.run(["psql", f"{PG_URL}/postgres", "-q", "-v", "ON_ERROR_STOP=1",
                        "-c", f'DROP DATABASE IF EXISTS "{name}"', "-c", f'CREATE DATABASE "{name}"'],
                       check=True, capture_output=True)
        self.databases.append(name)
        return f"{PG_URL}/{name}"

    def drop_database(self, name):
        subprocess.run(["psql", f"{PG_URL}/postgres", "-q", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                       capture_output=True)

    # ------------------------------------------------------------ load

    def load(self, url, body_path, seconds=SECONDS, conns=CONNS, rate=None):
        """One oha run; returns ok req/s, errors, p50/p99 ms (from its JSON)."""
        cmd = [self.oha, "-z", f"{seconds}s", "-c", str(conns), "-w", "--no-tui", "--output-format", "json",
               "-m", "POST", "-T", "application/json", "-D", str(body_path)]
        if rate is not None:
            cmd += ["-q", f"{rate:.0f}", "--latency-correction"]
        cmd.append(url)
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr[-2000:]}")
        return summarise(json.loads(out.stdout))

    def point(self, url, body_path, **kw):
        self.load(url, body_path, seconds=WARMUP, conns=kw.get("conns", CONNS))
        return self.load(url, body_path, **kw)


def summarise(r):
    codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    failed = sum(v for k, v in codes.items() if not 200 <= k < 300) + sum(r.get("errorDistribution", {}).values())
    total = r["summary"]["total"]
    pct = r.get("latencyPercentiles", {})
    return {
        "rps": ok / total if total else 0.0,
        "ok": ok,
        "errors": failed,
        "error_kinds": {**{str(k): v for k, v in codes.items() if not 200 <= k < 300}, **r.get("errorDistribution", {})},
        "p50_ms": (pct.get("p50") or 0.0) * 1e3,
        "p99_ms": (pct.get("p99") or 0.0) * 1e3,
        "seconds": total,
    }


# ---------------------------------------------------------------- inputs

def shared_dir():
    return Path(os.environ.get("SHARED", ROOT.parent / "shared"))


def lidc_rows():
    """Test-split LIDC rows (the check rows); README example rows when the data is absent."""
    path = shared_dir() / "data" / "lidc" / "nodules.csv"
    names = json.loads((ROOT / "models" / MODEL / "1" / "model.json").read_text())["input"]["features"]
    if path.exists():
        with open(path) as f:
            rows = [[float(r[n]) for n in names] for r in csv.DictReader(f) if r["split"] == "test"]
        if rows:
            return rows[:200], str(path)
    base = [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1.0]
    return [[v * (1 + 0.03 * i) if j < 5 else v for j, v in enumerate(base)] for i in range(50)], "built-in rows"


def check_peer(ours, peer, rows):
    """Both servers answer the same rows with the same numbers (to TOLERANCE)."""
    body = {"instances": [{"features": r} for r in rows]}
    a = json.loads(http("POST", f"{ours}/v1/triage", body)[1])["results"]
    b = json.loads(http("POST", f"{peer}/v1/triage", body)[1])["results"]
    assert len(a) == len(b) == len(rows)
    worst = 0.0
    for x, y in zip(a, b):
        if x["prediction"]["class"] != y["prediction"]["class"]:
            pa, pb = x["prediction"]["probabilities"], y["prediction"]["probabilities"]
            if abs(max(pa) - max(pb)) > TOLERANCE:
                raise SystemExit(f"peer check: classes differ: {x['prediction']} vs {y['prediction']}")
        pairs = list(zip(x["prediction"]["probabilities"], y["prediction"]["probabilities"]))
        pairs.append((x["uncertainty"]["disagreement"], y["uncertainty"]["disagreement"]))
        if "human_error" in x["uncertainty"]:
            pairs.append((x["uncertainty"]["human_error"], y["uncertainty"]["human_error"]))
        worst = max([worst] + [abs(p - q) for p, q in pairs])
    if worst > TOLERANCE:
        raise SystemExit(f"peer check: outputs differ by {worst:.2e} > {TOLERANCE} on {len(rows)} rows")
    return worst


# ---------------------------------------------------------------- one repetition

def repetition(b, onnx_path, bodies, rep):
    r = {}
    ours_errors = 0
    # 1-5: one server in automate_all mode (the shipped policy decides every case and its
    # decision is reported, no queue write) with the bench routes on.
    base, proc = b.triaged(f"main-{rep}", {"TRIAGED__TRIAGE__MODE": "automate_all",
                                           "TRIAGED__SERVER__BENCH_ROUTES": "true"},
                           extra_ready=[f"/v2/models/{CNN}/ready"])
    for key, path, body in [("ceiling", "/bench/parse", "one"), ("triage", "/v1/triage", "one"),
                            ("predict", "/bench/predict", "one"),
                            ("cnn_batched", f"/v1/models/{CNN}/triage", "image")]:
        r[key] = b.point(base + path, bodies[body])
        log(f"rep {rep} {key}: {r[key]['rps']:.0f} req/s, p99 {r[key]['p99_ms']:.2f} ms, errors {r[key]['errors']}")
    rate = HALF * r["ceiling"]["rps"]
    r["open_loop"] = b.load(base + "/v1/triage", bodies["one"], rate=rate, conns=max(CONNS, 64))
    r["open_loop"]["rate"] = rate
    log(f"rep {rep} open loop at {rate:.0f}/s: p99 {r['open_loop']['p99_ms']:.2f} ms, "
        f"{r['open_loop']['rps']:.0f} ok/s, errors {r['open_loop']['errors']}")
    r["open_loop_floor"] = b.load(base + "/bench/parse", bodies["one"], rate=rate, conns=max(CONNS, 64))
    r["open_loop_floor"]["rate"] = rate
    log(f"rep {rep} open loop floor (parse-only) at {rate:.0f}/s: p99 {r['open_loop_floor']['p99_ms']:.2f} ms")
    b.stop(proc)

    # 4: the same server with batches of one.
    base, proc = b.triaged(f"batch1-{rep}", {"TRIAGED__TRIAGE__MODE": "automate_all",
                                             "TRIAGED__BATCH__MAX_BATCH_SIZE": "1"},
                           extra_ready=[f"/v2/models/{CNN}/ready"])
    r["cnn_batch1"] = b.point(f"{base}/v1/models/{CNN}/triage", bodies["image"])
    log(f"rep {rep} cnn_batch1: {r['cnn_batch1']['rps']:.0f} images/s")
    b.stop(proc)

    # 6: default configuration: the shipped LIDC policy routes every case (no certified
    # threshold), each committed to SQLite before the answer.
    base, proc = b.triaged(f"enqueue-{rep}", {})
    r["enqueue"] = b.point(f"{base}/v1/triage", bodies["one"])
    log(f"rep {rep} enqueue (SQLite): {r['enqueue']['rps']:.0f} cases/s")
    b.stop(proc)

    # 7: one vs two daemons on one PostgreSQL database (fresh per point).
    try:
        url = b.create_database(f"triaged_bench_{os.getpid()}_{rep}_one")
        base, proc = b.triaged(f"pg-one-{rep}", {"TRIAGED__STORE__URL": url})
        r["pg_one"] = b.point(f"{base}/v1/triage", bodies["one"])
        b.stop(proc)
        url = b.create_database(f"triaged_bench_{os.getpid()}_{rep}_two")
        base1, p1 = b.triaged(f"pg-two-a-{rep}", {"TRIAGED__STORE__URL": url})
        base2, p2 = b.triaged(f"pg-two-b-{rep}", {"TRIAGED__STORE__URL": url})
        r["pg_two"] = both(b, [f"{base1}/v1/triage", f"{base2}/v1/triage"], bodies["one"])
        b.stop(p1)
        b.stop(p2)
        log(f"rep {rep} PostgreSQL: one daemon {r['pg_one']['rps']:.0f}, two {r['pg_two']['rps']:.0f} cases/s")
    except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
        log(f"rep {rep}: PostgreSQL point skipped: {e}")

    for key, v in r.items():
        ours_errors += v["errors"]

    # 2: the peer, same request.
    base, proc = b.peer(onnx_path)
    r["peer"] = b.point(f"{base}/v1/triage", bodies["one"])
    log(f"rep {rep} peer: {r['peer']['rps']:.0f} req/s, errors {r['peer']['errors']}")
    b.stop(proc)

    figures = {
        "ceiling_ratio": r["triage"]["rps"] / r["ceiling"]["rps"],
        "peer_ratio": r["triage"]["rps"] / r["peer"]["rps"] if r["peer"]["rps"] else None,
        "p99_ms_at_half": r["open_loop"]["p99_ms"],
        "errors": ours_errors,
        "cnn_batching_gain": r["cnn_batched"]["rps"] / r["cnn_batch1"]["rps"],
        "policy_overhead_ratio": r["triage"]["rps"] / r["predict"]["rps"],
        "enqueue_per_s": r["enqueue"]["rps"],
        "scale_out_ratio": r["pg_two"]["rps"] / r["pg_one"]["rps"] if "pg_two" in r else None,
        "p99_floor_ms": r["open_loop_floor"]["p99_ms"],
    }
    return figures, r


def both(b, urls, body):
    """Two oha processes at once, half the connections each; summed."""
    half = max(1, CONNS // 2)
    for u in urls:
        b.load(u, body, seconds=WARMUP, conns=half)
    cmds = []
    for u in urls:
        cmds.append(subprocess.Popen([b.oha, "-z", f"{SECONDS}s", "-c", str(half), "-w", "--no-tui",
                                      "--output-format", "json", "-m", "POST", "-T", "application/json",
                                      "-D", str(body), u], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    parts = []
    for c in cmds:
        out, err = c.communicate()
        if c.returncode != 0:
            raise RuntimeError(f"oha failed: {err[-2000:]}")
        parts.append(summarise(json.loads(out)))
    return {"rps": sum(p["rps"] for p in parts), "errors": sum(p["errors"] for p in parts),
            "p99_ms": max(p["p99_ms"] for p in parts), "parts": parts}


# ---------------------------------------------------------------- output

def spread(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def verdict(key, s):
    op, goal = GOALS[key]
    if s is None:
        return "n/a"
    v = s["median"]
    if op == "report":
        return "reported"
    ok = {">=": v >= goal, "<=": v <= goal, "==": v == goal}[op]
    return ("ok" if ok else "SHORT") + f" ({op} {goal:g})"


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


LABELS = {
    "ceiling_ratio": "triage ÷ parse-only ceiling (req/s)",
    "peer_ratio": "triage ÷ FastAPI + onnxruntime peer (req/s)",
    "p99_ms_at_half": "p99 ms, /v1/triage open loop at ½ ceiling",
    "errors": "errors (non-2xx + transport), all runs on triaged",
    "cnn_batching_gain": "CNN images/s, dynamic batching ÷ batch 1",
    "policy_overhead_ratio": "triage with shipped policy ÷ predict-only",
    "enqueue_per_s": "routed cases durably enqueued /s (SQLite)",
    "scale_out_ratio": "2 daemons ÷ 1 on one PostgreSQL (cases/s)",
    "p99_floor_ms": "p99 ms, parse-only route, same open loop (the floor)",
}
POINTS = {
    "ceiling": "POST /bench/parse (parse + render, no model)",
    "triage": "POST /v1/triage, automate_all",
    "predict": "POST /bench/predict (model, no policy)",
    "peer": "peer POST /v1/triage (2 uvicorn workers)",
    "open_loop": "open loop /v1/triage (ok/s)",
    "open_loop_floor": "open loop /bench/parse (ok/s)",
    "cnn_batched": "CNN, 1 JPEG per request, batching",
    "cnn_batch1": "CNN, max_batch_size = 1",
    "enqueue": "/v1/triage, default config, SQLite",
    "pg_one": "1 daemon, PostgreSQL",
    "pg_two": "2 daemons, PostgreSQL",
}


def table(results):
    m = results["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"{m['rustc']}; commit {m['commit']}; load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. "
        f"{results['settings']['reps']} repetitions of {results['settings']['seconds']:g} s per point, "
        f"{results['settings']['connections']} connections, one case per request.",
        "",
        "| figure | median | min | max | goal |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for key, label in LABELS.items():
        s = results.get(key)
        lines.append(f"| {label} | {fmt(s and s['median'])} | {fmt(s and s['min'])} | {fmt(s and s['max'])} | {verdict(key, s)} |")
    lines += ["", "| point | req/s (median) | p99 ms (median) |", "| --- | ---: | ---: |"]
    for key, label in POINTS.items():
        s = results["points"].get(key)
        if s:
            lines.append(f"| {label} | {fmt(s['rps']['median'])} | {s['p99_ms']['median']:.2f} |")
    return "\n".join(lines)


def update_readme(text):
    readme = ROOT / "README.md"
    s = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in s or end not in s:
        log("README has no bench markers; table not written there")
        return
    head, rest = s.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main():
    binary = build()
    oha_bin = oha()
    venv()
    work = Path(tempfile.mkdtemp(prefix="triaged-bench-"))
    onnx_path = work / f"{MODEL}.onnx"
    run([str(VENV / "bin" / "python"), str(BENCHES / "peer" / "export_onnx.py"),
         str(ROOT / "models" / MODEL / "1"), str(onnx_path)])
    rows, rows_from = lidc_rows()
    bodies = {
        "one": work / "one.json",
        "image": work / "image.json",
    }
    bodies["one"].write_text(json.dumps({"instances": [{"features": rows[0]}]}))
    jpeg = ROOT / "tests" / "fixtures" / "cifar" / "test" / "cat" / "0001.jpg"
    bodies["image"].write_text(json.dumps({"instances": [{"image": base64.b64encode(jpeg.read_bytes()).decode()}]}))
    info = machine()
    b = Bench(binary, oha_bin, work)
    figures, raw = [], []
    try:
        # The peer serves the same network: equal outputs on real rows, checked first.
        ours, p1 = b.triaged("check", {"TRIAGED__TRIAGE__MODE": "automate_all"})
        peer, p2 = b.peer(onnx_path)
        worst = check_peer(ours, peer, rows)
        log(f"peer check: {len(rows)} rows ({rows_from}) agree to {worst:.1e} (tolerance {TOLERANCE})")
        b.stop(p1)
        b.stop(p2)
        for rep in range(1, REPS + 1):
            f, r = repetition(b, onnx_path, bodies, rep)
            figures.append(f)
            raw.append(r)
    finally:
        b.stop_all()
    results = {key: spread([f[key] for f in figures]) for key in GOALS}
    results["machine"] = info
    results["settings"] = {"seconds": SECONDS, "reps": REPS, "connections": CONNS, "open_loop_fraction": HALF,
                           "load_tool": f"oha {OHA_VERSION}", "workers": 2}
    results["peer_check"] = {"rows": len(rows), "source": rows_from, "max_abs_diff": worst, "tolerance": TOLERANCE}
    results["points"] = {
        key: {"rps": spread([r[key]["rps"] for r in raw if key in r]),
              "p99_ms": spread([r[key]["p99_ms"] for r in raw if key in r]),
              "errors": sum(r[key]["errors"] for r in raw if key in r)}
        for key in POINTS if any(key in r for r in raw)
    }
    results["repetitions"] = raw
    out = BENCHES / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    print(text)
    if os.environ.get("BENCH_README", "1") != "0":
        update_readme(text)
    log(f"wrote {out.relative_to(ROOT)}; logs in {work}")


if __name__ == "__main__":
    main()
