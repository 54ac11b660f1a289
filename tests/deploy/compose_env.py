#!/usr/bin/env python3
"""The environment deploy/compose.yaml gives its triaged services, for running the
binary outside a container (tests/deploy/check.sh, step 4).

  compose_env.py OUTDIR STORE_URL [VAR=VALUE ...]

Interpolates compose.yaml's ${…} with deploy/.env.example overlaid by the VAR=VALUE
arguments (as `docker compose` does with deploy/.env), checks that triaged-1 and
triaged-2 get the same image, environment and config files, and writes:

  OUTDIR/compose.env    `export K=V` lines: the image's TRIAGED* ENV (deploy/Dockerfile)
                        then the service's environment, as the container would see them
  OUTDIR/<config name>  each config file the services mount (`configs:` content)

Container paths are mapped to this checkout: the image's model folder to ./models,
each mounted config's target to its file in OUTDIR. Only the store URL is replaced
(STORE_URL): the compose one names the `postgres` service's host, which exists only
inside the compose network.
"""
import re
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def read_env_file(path):
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def interpolate(value, env):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
    $VAR and $$ (a literal $), applied to every string of a parsed document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group("esc"):
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg") or ""
        val = env.get(name)
        if val == "" and op in (":-", ":?"):
            val = None
        if val is not None:
            return val
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            sys.exit(f"compose.yaml needs {name}: {arg}")
        return ""

    pattern = r"\$(?:(?P<esc>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<plain>\w+))"
    return re.sub(pattern, sub, value)


def dockerfile_env():
    """TRIAGED* variables set by ENV in the runtime stage of deploy/Dockerfile."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text.split("AS runtime", 1)[1]
    env = {}
    for line in runtime.splitlines():
        if line.strip().startswith("ENV "):
            for k, v in re.findall(r"(\w+)=(\S+)", line):
                if k.startswith("TRIAGED"):
                    env[k] = v
    return env


def main():
    out, store_url, pairs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    env = read_env_file(DEPLOY / ".env.example")
    env.update(dict(p.split("=", 1) for p in pairs))
    compose = interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), env)
    services = compose["services"]
    names = sorted(n for n in services if n.startswith("triaged"))
    if len(names) < 2:
        sys.exit(f"compose.yaml should run two triaged services, found {names}")
    first = services[names[0]]
    for n in names[1:]:
        for key in ("image", "environment", "configs"):
            if services[n].get(key) != first.get(key):
                sys.exit(f"compose.yaml: {n} and {names[0]} differ in {key}")
    if first.get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
        sys.exit("compose.yaml: the daemons should wait for a healthy postgres")
    container = dict(dockerfile_env())
    environment = first["environment"]
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) for e in environment)
    container.update({k: str(v) for k, v in environment.items()})
    paths = {"/opt/triaged/models": str(ROOT / "models")}
    for c in first.get("configs", []):
        content = compose["configs"][c["source"]]["content"]
        local = out / c["source"]
        local.write_text(content)
        paths[c["target"]] = str(local)
    for k, v in container.items():
        container[k] = paths.get(v, v)
    if not container.get("TRIAGED__STORE__URL", "").startswith("postgres"):
        sys.exit("compose.yaml: the daemons should share a PostgreSQL queue (TRIAGED__STORE__URL)")
    container["TRIAGED__STORE__URL"] = store_url
    (out / "compose.env").write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(container.items())))
    print(f"{names}: " + ", ".join(sorted(container)))


if __name__ == "__main__":
    main()
