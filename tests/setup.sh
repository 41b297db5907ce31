#!/usr/bin/env bash
# Prepares a machine for the test command, idempotently: installs what is missing (Debian
# packages, the Python virtualenv, the npm tools) and starts PostgreSQL and Redis if they are
# not running. Safe to run on a fresh machine and on a developer's.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
  say "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Tools the suites call.
command -v cargo >/dev/null || { echo "setup: cargo is required (rustup)"; exit 1; }
command -v psql >/dev/null || apt_install postgresql postgresql-client
command -v redis-server >/dev/null || apt_install redis-server
command -v node >/dev/null || apt_install nodejs npm
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv

# Services: PostgreSQL (trust auth for user postgres on 127.0.0.1:5432) and Redis.
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  say "starting PostgreSQL"
  for v in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  done
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432 -q || { echo "setup: PostgreSQL did not start"; exit 1; }
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
fi

# Python: the official clients, in a virtualenv.
if [ ! -x .venv/bin/pytest ] || [ tests/python/requirements.txt -nt .venv/.installed ]; then
  say "installing Python test dependencies"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
  touch .venv/.installed
fi

# Python: the MCP SDK's 1.x client, beside the 2.x one (tests/python/mcp1_client.py).
if [ ! -x .venv-mcp1/bin/python ] || [ tests/python/requirements-mcp1.txt -nt .venv-mcp1/.installed ]; then
  say "installing the Python MCP 1.x client"
  python3 -m venv .venv-mcp1
  .venv-mcp1/bin/pip install -q --disable-pip-version-check -r tests/python/requirements-mcp1.txt
  touch .venv-mcp1/.installed
fi

# npm: buf, for proto lint and buf curl.
if [ ! -x node_modules/.bin/buf ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm tools"
  npm ci --no-audit --no-fund --loglevel=error
fi
say "ready"
