#!/usr/bin/env python3
"""Two (or more) Weir builds beside nginx, pinned as section 1 is (one worker; proxy and
backend on CPU 0, wrk on CPU 1), HTTP/1.1 keep-alive at 16, 128 and 512 connections,
interleaved for BENCH_ROUNDS rounds (default 5) so that a drifting machine moves every
build alike. For a change to the request path: build the base and the change, keep both
binaries, and compare them in one run (section 1 compares only the current build with
nginx, and its rounds on a shared VM spread more than most changes move).

  python3 bench/ab.py base=/tmp/weir-base new=target/release/weir
  BENCH_CONNS=512 BENCH_ROUNDS=7 BENCH_DURATION=5 python3 bench/ab.py a=PATH b=PATH

Prints (and writes to BENCH_OUT, default bench/results/latest-ab.md) the median req/s and
p99 per build, with the range in brackets, × nginx and × the first build, and the proxy's
CPU time per request (user + system, all its threads; medians of each): on a VM whose neighbours move req/s
by half between rounds, CPU per request moves much less.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("BENCH_DURATION", "5")
os.environ.setdefault("BENCH_ROUNDS", "5")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

CONNS = [int(c) for c in os.environ.get("BENCH_CONNS", "16,128,512").split(",") if c]


def start_weir(binary):
    bench.WEIR = Path(binary)
    return bench.start_weir(bench.weir_config(10))


def main():
    builds = []
    for arg in sys.argv[1:]:
        name, sep, path = arg.partition("=")
        if not sep or not Path(path).is_file():
            sys.exit(f"usage: ab.py NAME=BINARY NAME=BINARY ... ({arg!r} is not one)")
        builds.append((name, path))
    if not builds:
        sys.exit(__doc__)
    systems = [("nginx", lambda: bench.start_nginx(10), bench.PORTS["nginx_http"])]
    systems += [(name, lambda p=path: start_weir(p), bench.WEIR_HTTP) for name, path in builds]
    runs, notes = bench.rounds(systems, CONNS, alternate=True)

    first = builds[0][0]
    lines = [f"One worker pinned (section 1's layout), HTTP/1.1 keep-alive (wrk -t1), "
             f"{bench.DURATION} s per case, median of {bench.ROUNDS} interleaved rounds, "
             f"req/s range in brackets.", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- {name}: `{path}`" for name, path in builds] + [""]
    lines += [f"| conns | target | req/s | p99 ms | CPU µs/req | user | sys | × nginx | × {first} "
              "| errors |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for conns in CONNS:
        med = {name: bench.spread(runs[(name, conns)])[0] for name, _, _ in systems}
        for name, _, _ in systems:
            rs = runs[(name, conns)]
            r, lo, hi, err = bench.spread(rs)
            p99s = sorted(x["p99"] for x in rs)
            cpus = sorted(x["cpu_us"] for x in rs)
            user = sorted(x["user_us"] for x in rs)[len(rs) // 2]
            system = sorted(x["sys_us"] for x in rs)[len(rs) // 2]
            ng, base = med["nginx"]["rps"], med[first]["rps"]
            lines.append(f"| {conns} | {name} | {r['rps']:.0f} [{lo:.0f}–{hi:.0f}] | "
                         f"{bench.fmt_ms(p99s[len(p99s) // 2])} | "
                         f"{cpus[len(cpus) // 2]:.1f} [{cpus[0]:.1f}–{cpus[-1]:.1f}] | "
                         f"{user:.1f} | {system:.1f} | "
                         f"{r['rps'] / ng:.2f} | "
                         f"{r['rps'] / base:.2f} | {err} |")
    bench.publish(lines, "latest-ab.md")


if __name__ == "__main__":
    main()
