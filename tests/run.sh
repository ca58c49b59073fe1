#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: installs what the tests need (a venv with the
# package and its dev tools; mosquitto, socat and mbpoll from Debian when missing), then runs
# ruff, mypy and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in mosquitto socat mbpoll tshark; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# The commissioning page's browser tests drive Debian's chromium through its chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# An independent BACnet stack (JavaScript) is installed from npm by the interop test.
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: run 'sudo apt-get install ${need[*]}' (tests that need them will fail)" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
