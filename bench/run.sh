#!/usr/bin/env bash
# `make bench`: install the load generators, peer proxies and redis-server if missing
# (Debian), build Weir and the test helpers (weir-test-auth, weir-test-epp) in release
# mode, then run every benchmark section (bench/run.py). BENCH_QUICK=1 for a smoke run of a
# few seconds per case. See bench/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
# Section 7 (policy rows): the global rate limit counts in a local Redis; redis-benchmark
# (redis-tools, a dependency) times its round trip.
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
  # The Debian packages start system services; the benchmark runs its own instances.
  for svc in nginx haproxy; do
    $sudo systemctl stop "$svc" 2>/dev/null || $sudo service "$svc" stop 2>/dev/null || true
  done
fi

(cd "$root" && ${CARGO:-cargo} build --release --bins)
exec python3 "$here/run.py" "$@"
