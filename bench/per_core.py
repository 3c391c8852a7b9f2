#!/usr/bin/env python3
"""Issue 25, "scale across cores": Weir's two runtime modes at 2 workers beside nginx with
2 workers, HTTP/1.1 keep-alive at 16, 128 and 512 connections (section 1's route, backend,
load generator and checks, from run.py), interleaved for BENCH_ROUNDS rounds (default 3):

  direct            wrk against the backend nginx
  nginx             worker_processes 2
  nginx-pinned      worker_processes 2, worker_cpu_affinity auto
  weir-ws           --runtime work-stealing --worker-threads 2
  weir-pc           --runtime per-core --worker-threads 2
  weir-pc-pinned    --runtime per-core --worker-threads 2 --pin-workers

All processes may use every CPU (no taskset: "all cores, unpinned"); "pinned" pins the
proxy's own workers one per CPU. Prints and writes (BENCH_OUT, default
bench/results/latest-per-core.md) a table of medians with the range in brackets, and the
load average and compiler count at each round's start.

  python3 bench/per_core.py                    # release build at target/release/weir
  BENCH_DURATION=5 BENCH_ROUNDS=3 python3 bench/per_core.py
  BENCH_SYSTEMS=weir-ws,weir-pc python3 bench/per_core.py
"""

import os
import subprocess
import sys
import time
from pathlib import Path

# Every process on every CPU: set before run.py reads them.
os.environ.setdefault("BENCH_PROXY_CPU", "0-63")
os.environ.setdefault("BENCH_LOAD_CPU", "0-63")
os.environ.setdefault("BENCH_BACKEND_CPU", "0-63")
os.environ.setdefault("BENCH_DURATION", "8")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

CONNS = [16, 128, 512]
WORKERS = os.environ.get("BENCH_WORKERS", "2")


def start_weir(extra):
    p = bench.Proc(
        "weir",
        [str(bench.WEIR), "run", "--config-dir", str(bench.weir_config(10)), "--bind", "127.0.0.1",
         "--listener-port-offset", str(bench.PORTS["weir_offset"]),
         "--admin-addr", f"127.0.0.1:{bench.PORTS['weir_admin']}", "--log-level", "warn",
         "--access-log", "off", "--worker-threads", WORKERS, *extra],
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if not p.alive():
            raise RuntimeError(f"weir exited; see {p.log_path}")
        if bench.http_get(bench.PORTS["weir_admin"], "localhost", "/readyz") == 200:
            return p
        time.sleep(0.05)
    raise RuntimeError("weir did not become ready")


def start_nginx(pinned):
    conf = bench.nginx_config(10)
    text = conf.read_text().replace(
        "worker_processes 1;",
        f"worker_processes {WORKERS};" + (" worker_cpu_affinity auto;" if pinned else ""), 1)
    path = conf.with_name(f"proxy-nginx-{WORKERS}w{'-pinned' if pinned else ''}.conf")
    path.write_text(text)
    (bench.TMP / "nginx-tmp").mkdir(exist_ok=True)
    p = bench.Proc("nginx", ["nginx", "-p", str(bench.TMP), "-c", str(path)])
    bench.wait_port(bench.PORTS["nginx_http"], proc=p)
    return p


SYSTEMS = [
    ("direct", None, bench.PORTS["backend_http"]),
    ("nginx", lambda: start_nginx(False), bench.PORTS["nginx_http"]),
    ("nginx-pinned", lambda: start_nginx(True), bench.PORTS["nginx_http"]),
    ("weir-ws", lambda: start_weir(["--runtime", "work-stealing"]), bench.WEIR_HTTP),
    ("weir-pc", lambda: start_weir(["--runtime", "per-core"]), bench.WEIR_HTTP),
    ("weir-pc-pinned", lambda: start_weir(["--runtime", "per-core", "--pin-workers"]),
     bench.WEIR_HTTP),
]


def compilers():
    r = subprocess.run(["pgrep", "-c", "-x", "rustc"], capture_output=True, text=True)
    return int(r.stdout.strip() or 0)


def main():
    only = [s for s in os.environ.get("BENCH_SYSTEMS", "").split(",") if s]
    systems = [s for s in SYSTEMS if not only or s[0] in only or s[0] == "direct"]
    runs, machine = bench.rounds(systems, CONNS, note=lambda: f", {compilers()} rustc running")

    lines = [f"Weir and nginx with {WORKERS} workers each, all processes on all CPUs, "
             f"HTTP/1.1 keep-alive (wrk -t1), {bench.DURATION} s per case, median of "
             f"{bench.ROUNDS} interleaved rounds, req/s range in brackets.", ""]
    lines += [f"- {m}" for m in machine] + [""]
    lines += ["| conns | target | req/s | p50 ms | p99 ms | × nginx | × weir-ws | errors |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for conns in CONNS:
        med = {}
        for name, _, _ in systems:
            rs = runs.get((name, conns))
            if rs:
                med[name] = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        for name, _, _ in systems:
            rs = runs.get((name, conns))
            if not rs:
                continue
            r, lo, hi, err = bench.spread(rs)
            ng, ws = med.get("nginx", {}).get("rps"), med.get("weir-ws", {}).get("rps")
            xn = f"{r['rps'] / ng:.2f}" if ng else "—"
            xw = f"{r['rps'] / ws:.2f}" if ws else "—"
            lines.append(f"| {conns} | {name} | {r['rps']:.0f} [{lo:.0f}–{hi:.0f}] | "
                         f"{bench.fmt_ms(r['p50'])} | {bench.fmt_ms(r['p99'])} | {xn} | {xw} | "
                         f"{err} |")
    bench.publish(lines, "latest-per-core.md")


if __name__ == "__main__":
    main()
