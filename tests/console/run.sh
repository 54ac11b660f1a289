#!/usr/bin/env bash
# The reviewer console in headless Chromium (for CI): installs Debian's chromium
# and chromium-driver when missing, and selenium into a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/triaged-checks (the acceptance check's), then
# runs tests/console/console_test.py against ./target/release/triaged.
# Screenshots go to target/console-screenshots/.
#
# Run from anywhere after `cargo build --release`:  tests/console/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TRIAGED_BIN:-./target/release/triaged}
[ -x "$BIN" ] || { echo "FAIL: no binary at $BIN: run cargo build --release first"; exit 2; }
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
venv=${XDG_CACHE_HOME:-$HOME/.cache}/triaged-checks/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import selenium' 2>/dev/null || "$venv/bin/pip" install -q selenium
exec "$venv/bin/python" tests/console/console_test.py --bin "$BIN" --shots target/console-screenshots
