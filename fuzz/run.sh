#!/usr/bin/env bash
# `make fuzz`: build the fuzz targets, then run each for FUZZ_SECONDS from its seed corpus
# (fuzz/corpus/TARGET) and what earlier runs found (target/fuzz/corpus/TARGET). Fails on the
# first crash, leak of the per-input memory bound or timeout, with the input kept in
# fuzz/artifacts/TARGET/ (docs/FUZZING.md: how to turn it into a regression test).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-25}
targets=${FUZZ_TARGETS:-yaml_to_snapshot path_normalise request_match proxy_protocol}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-none}
out=$root/target/fuzz

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  echo "fuzz: no $toolchain toolchain; rustup toolchain install $toolchain --profile minimal" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; cargo install cargo-fuzz --locked" >&2
  exit 1
fi

start=$(date +%s)
# No sanitizer by default: Weir is safe Rust (unsafe_code = forbid), so ASan finds little
# and doubles the build; the targets bound memory themselves (fuzz/src/lib.rs). 16 codegen
# units: cargo fuzz's default of 1 makes the cold build much longer for little speed.
(cd fuzz && cargo "+$toolchain" fuzz build --sanitizer "$sanitizer" --codegen-units 16 \
  --target-dir "$out")
built=$(date +%s)
echo "fuzz: built in $((built - start)) s"

bin=$out/x86_64-unknown-linux-gnu/release
# The targets write their inputs as files (file mode reads a directory): into a scratch
# directory of ours, removed afterwards.
export TMPDIR=$out/tmp
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT

for target in $targets; do
  if [ ! -x "$bin/$target" ]; then
    echo "fuzz: no target $target (fuzz/fuzz_targets/ has: $(ls fuzz/fuzz_targets | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 1
  fi
  case $target in
    yaml_to_snapshot) extra=(-max_len=8192 -dict=fuzz/yaml.dict) ;;
    path_normalise) extra=(-max_len=512) ;;
    request_match) extra=(-max_len=2048) ;;
    proxy_protocol) extra=(-max_len=4200) ;;
    *) extra=() ;;
  esac
  mkdir -p "$out/corpus/$target" "fuzz/artifacts/$target" "$out/logs"
  log=$out/logs/$target.log
  # -timeout: an input that takes 10 s is a bug (an alias bomb is refused in milliseconds).
  # -rss_limit_mb backs up the per-input bound of fuzz/src/lib.rs; -malloc_limit_mb acts
  # only in sanitizer builds (FUZZ_SANITIZER=address), where libFuzzer hooks malloc.
  if ! "$bin/$target" "$out/corpus/$target" "fuzz/corpus/$target" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512 \
      -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" "${extra[@]}" \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/ (full log: $log)." >&2
    echo "fuzz: replay it with $bin/$target fuzz/artifacts/$target/<file>" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  echo "fuzz: $target ok: $runs runs in ${seconds} s ($rate/s), $cov"
done
echo "fuzz: done in $(($(date +%s) - start)) s"
