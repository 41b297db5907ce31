#!/usr/bin/env bash
# The benchmark harness, whole: installs what it needs (wrk from Debian's packages, LiteLLM's
# proxy from PyPI in its own virtualenv), starts PostgreSQL and Redis if they are not running,
# builds Ferryman and the harness in release, and prints one table. Arguments go to
# `ferryman-bench run` (e.g. --runs 5, --lanes plain,governed-sqlite).
#   BENCH_LITELLM=0   skip the LiteLLM lanes (and their install)
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "bench: $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v wrk >/dev/null; then
  say "installing wrk"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
bash tests/setup.sh >&2

args=("$@")
if [ "${BENCH_LITELLM:-1}" != "0" ]; then
  venv=target/bench-venv
  if [ ! -x "$venv/bin/litellm" ] || [ tests/bench/requirements.txt -nt "$venv/.installed" ]; then
    say "installing LiteLLM's proxy into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/bench/requirements.txt
    touch "$venv/.installed"
  fi
  args+=(--litellm "$venv/bin/litellm")
else
  has_lanes=0
  for a in "$@"; do [ "$a" = "--lanes" ] && has_lanes=1; done
  [ "$has_lanes" = 1 ] || args+=(--lanes plain,governed-sqlite,governed-redis,governed-grpc)
fi

say "building release binaries"
cargo build -q --release -p ferryman-server --bin ferryman -p ferryman-tests --bin ferryman-bench
target="${CARGO_TARGET_DIR:-target}"
export FERRYMAN_BIN="$target/release/ferryman"
say "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
exec "$target/release/ferryman-bench" run "${args[@]}"
