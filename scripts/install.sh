#!/usr/bin/env bash
# Install what Fanpin needs on a fresh Debian machine. Idempotent and quick when done.
#   scripts/install.sh          the Python environment (.venv) and the Kafka jars
#   scripts/install.sh --test   also the test servers and browser from Debian's packages
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"

need_apt=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_apt+=("$1"); }
command -v java >/dev/null || want openjdk-17-jre-headless
command -v mvn >/dev/null || want maven
if [ "${1:-}" = "--test" ]; then
  want postgresql
  want chromium
  want fonts-wqy-microhei   # Chinese glyphs for the browser tests' screenshots
  want prometheus           # promtool
  want docker-compose       # parses docker-compose.yml, ships compose_spec.json (test_deploy)
  want prometheus-pushgateway  # the Prometheus integration test pushes batch metrics
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install: Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp="$venv/.fanpin-installed"
if [ ! -x "$venv/bin/python" ]; then
  echo "install: creating $venv"
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "install: Python packages (pip install -e .[dev])"
  "$venv/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
  touch "$stamp"
fi
bash scripts/fetch-kafka.sh
