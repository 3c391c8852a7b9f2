#!/usr/bin/env python3
"""A/B req/s for 2026-12-07-hyper-buffers.md: bench section 1's set-up (one weir worker and
the backend on BENCH_PROXY_CPU, wrk on BENCH_LOAD_CPU, route 9 of 10, HTTP/1.1 keep-alive),
several variants (a binary plus environment variables) interleaved in each round, at 16,
128 and 512 connections. Prints medians with the range of the rounds in brackets.

    BENCH_PORT_SHIFT=11000 BENCH_ROUNDS=3 BENCH_DURATION=8 python3 bench/results/hyper_buffers_ab.py \\
        'A=/path/weir' 'B=/path/weir:HYPER_EXP_RELEASE_READ=1,HYPER_EXP_RELEASE_WRITE=1'
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import run  # noqa: E402

CONNS = [int(c) for c in os.environ.get("BENCH_CONNS", "16,128,512").split(",")]


def parse(spec):
    label, rest = spec.split("=", 1)
    binary, _, envs = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return label, binary, env


def main():
    variants = [parse(a) for a in sys.argv[1:]]
    run.TMP.mkdir(parents=True, exist_ok=True)
    n, target = 10, 9
    hostname, path = run.host(target), f"{run.prefix(target)}/x"
    config = run.weir_config(n)
    backend = run.start_backend()
    res = {}
    try:
        for rnd in range(run.ROUNDS):
            print(f"round {rnd + 1} of {run.ROUNDS}, load {os.getloadavg()[0]:.1f}", flush=True)
            for label, binary, env in variants:
                run.WEIR = Path(binary)
                saved = dict(os.environ)
                os.environ.update(env)
                try:
                    p = run.start_weir(config)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                try:
                    ok = run.http_get(run.WEIR_HTTP, hostname, path)
                    if ok != 200:
                        raise RuntimeError(f"{label}: route check {ok}")
                    for c in CONNS:
                        run.wrk(run.WEIR_HTTP, hostname, path, c, run.WARMUP)
                        r = run.wrk(run.WEIR_HTTP, hostname, path, c, run.DURATION)
                        if r["non2xx"] or r["socket_errors"]:
                            raise RuntimeError(f"{label} c={c}: errors {r}")
                        res.setdefault((label, c), []).append(r)
                        print(f"  {label:10} c={c:4} {r['rps']:9.0f} req/s  p99 {r['p99']:.2f} ms",
                              flush=True)
                finally:
                    p.stop()
    finally:
        backend.stop()
    print()
    print("| variant | " + " | ".join(f"{c} conns req/s" for c in CONNS) + " | "
          + " | ".join(f"p99 ms {c}" for c in CONNS) + " |")
    print("| --- |" + " ---: |" * (2 * len(CONNS)))
    for label, _, _ in variants:
        cells, lat = [], []
        for c in CONNS:
            rs = [r["rps"] for r in res[(label, c)]]
            cells.append(f"{statistics.median(rs):.0f} [{min(rs):.0f}–{max(rs):.0f}]")
            lat.append(f"{statistics.median(r['p99'] for r in res[(label, c)]):.2f}")
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(lat) + " |")


if __name__ == "__main__":
    main()
