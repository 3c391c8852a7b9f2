#!/usr/bin/env python3
"""Where a proxy's time goes outside its own instructions: syscalls, epoll waits, context
switches and page faults per request, for Weir and nginx at several connection counts.

The set-up is section 1's (bench/README.md): the backend nginx and the proxy under test share
CPU 0 (`BENCH_PROXY_CPU`), wrk runs on CPU 1; one worker each (`weir --worker-threads 1`,
nginx `worker_processes 1`); HTTP/1.1 keep-alive to route 9 (10 routes). While wrk runs for
`--seconds`, `perf stat` counts tracepoints (`syscalls:sys_enter_*`, `raw_syscalls`) and
software events on the proxy's worker only (not nginx's master), and
`/proc/PID/task/*/status` gives voluntary and involuntary context switches. A second, short
run under `perf record -e syscalls:sys_exit_epoll_wait` sums the events each wait returned.
Hardware counters (cache and TLB misses) are not available in this VM; for cache behaviour
use `bench/callgrind.py` (callgrind's cache simulation).

    python3 bench/syscalls.py [--conns 16,128,512] [--seconds 10] [--proxies weir,nginx]
        [--weir PATH] [--markdown OUT] [-- EXTRA WEIR ARGS]

Needs `perf` with tracepoints (`perf_event_paranoid` ≤ 2 as root) and `wrk`.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

HOST = run.host(9)
PATH = run.prefix(9) + "/x"

# The syscalls a proxy makes per request, by kind. Everything else is counted in "other".
KINDS = [
    "epoll_wait", "epoll_pwait", "epoll_ctl", "read", "recvfrom", "recvmsg", "readv",
    "write", "writev", "sendto", "sendmsg", "accept4", "close", "futex", "sched_yield",
    "setsockopt", "getsockopt", "ioctl", "clock_gettime", "madvise", "mmap", "munmap", "brk",
]


def tracepoints():
    have = set()
    base = Path("/sys/kernel/tracing/events/syscalls")
    if not base.exists():
        base = Path("/sys/kernel/debug/tracing/events/syscalls")
    for k in KINDS:
        if (base / f"sys_enter_{k}").exists():
            have.add(k)
    return [k for k in KINDS if k in have]


def worker_pids(proc, proxy):
    root = run.proxy_root(proc)
    if proxy == "nginx":
        # the master only forks and waits; count the worker(s)
        kids = [p for p in run.tree_pids(root) if p != root]
        return kids or [root]
    return [root]


def ctxt(pids):
    vol = invol = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except OSError:
                continue
            vol += int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", text).group(1))
            invol += int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", text).group(1))
    return vol, invol


def perf_stat(pids, kinds, seconds):
    events = ["raw_syscalls:sys_enter", "context-switches", "cpu-migrations", "page-faults",
              "task-clock"] + [f"syscalls:sys_enter_{k}" for k in kinds]
    out = tempfile.NamedTemporaryFile(suffix=".perf", delete=False)
    out.close()
    argv = ["perf", "stat", "-x", ",", "-o", out.name, "-e", ",".join(events),
            "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out.name


def read_perf(path):
    counts = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        name = parts[2]
        name = name.replace("syscalls:sys_enter_", "")
        counts[name] = value
    os.unlink(path)
    return counts


def epoll_events(pids, port, seconds, conns):
    """Waits and the events they returned, from a `perf record` of epoll_wait's exits."""
    data = tempfile.NamedTemporaryFile(suffix=".data", delete=False)
    data.close()
    rec = subprocess.Popen(
        ["perf", "record", "-q", "-o", data.name, "-e", "syscalls:sys_exit_epoll_wait",
         "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    run.wrk(port, HOST, PATH, conns, seconds)
    rec.wait(seconds + 30)
    script = subprocess.run(["perf", "script", "-i", data.name, "-F", "trace"],
                            capture_output=True, text=True, timeout=120)
    os.unlink(data.name)
    waits = events = zero = 0
    for line in script.stdout.splitlines():
        m = re.search(r"0x([0-9a-f]+)", line)
        if not m:
            continue
        n = int(m.group(1), 16)
        if n > 1 << 31:  # an error (-EINTR)
            continue
        waits += 1
        events += n
        zero += n == 0
    return waits, events, zero



def measure(proxy, conns, seconds, extra):
    backend = run.start_backend()
    try:
        if proxy == "weir":
            cfg = run.weir_config(10)
            p = run.start_weir_args(cfg, extra)
            port = run.WEIR_HTTP
        else:
            p = run.start_nginx(10)
            port = run.PORTS["nginx_http"]
        try:
            pids = worker_pids(p, proxy)
            run.wrk(port, HOST, PATH, conns, 2)  # warm: connections, pools, caches
            kinds = tracepoints()
            v0, i0 = ctxt(pids)
            u0, s0 = run.cpu_ticks(pids)
            stat, path = perf_stat(pids, kinds, seconds)
            time.sleep(0.2)
            res = run.wrk(port, HOST, PATH, conns, seconds)
            stat.wait(seconds + 30)
            v1, i1 = ctxt(pids)
            u1, s1 = run.cpu_ticks(pids)
            counts = read_perf(path)
            reqs = max(1, res["requests"])
            row = {"proxy": proxy, "conns": conns, "rps": res["rps"], "requests": reqs,
                   "p99": res["p99"], "errors": res["socket_errors"] + res["non2xx"]}
            # perf counted a little longer than wrk ran (sleep + 0.2 s of idle before):
            # idle time adds waits, not requests; it is small against seconds of load.
            row["syscalls"] = counts.get("raw_syscalls:sys_enter", 0) / reqs
            row["kinds"] = {k: counts.get(k, 0) / reqs for k in kinds}
            row["cs_vol"] = (v1 - v0) / reqs
            row["cs_invol"] = (i1 - i0) / reqs
            row["migrations"] = counts.get("cpu-migrations", 0) / reqs
            row["faults"] = counts.get("page-faults", 0) / reqs
            row["user_us"] = (u1 - u0) * run.TICK_US / reqs
            row["sys_us"] = (s1 - s0) * run.TICK_US / reqs
            row["cpu_us"] = counts.get("task-clock", 0) * 1000 / reqs  # msec → µs
            waits, events, zero = epoll_events(pids, port, min(seconds, 5), conns)
            row["waits"] = waits
            row["events_per_wait"] = events / waits if waits else 0
            row["empty_waits"] = zero / waits if waits else 0
            return row
        finally:
            p.stop()
    finally:
        backend.stop()


def table(rows, kinds):
    shown = [k for k in kinds if any(r["kinds"].get(k, 0) >= 0.01 for r in rows)]
    head = ["proxy", "conns", "req/s", "CPU µs/req", "user µs", "sys µs", "syscalls/req", *shown,
            "ev/epoll_wait", "empty waits", "cs vol/req", "cs invol/req", "faults/req"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["proxy"], str(r["conns"]), f"{r['rps']:,.0f}", f"{r['cpu_us']:.1f}",
                 f"{r['user_us']:.1f}", f"{r['sys_us']:.1f}",
                 f"{r['syscalls']:.2f}", *(f"{r['kinds'].get(k, 0):.2f}" for k in shown),
                 f"{r['events_per_wait']:.2f}", f"{100 * r['empty_waits']:.0f} %",
                 f"{r['cs_vol']:.3f}", f"{r['cs_invol']:.3f}", f"{r['faults']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", default="16,128,512")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--proxies", default="weir,nginx")
    ap.add_argument("--weir", default=None, help="weir binary (default target/release/weir)")
    ap.add_argument("--markdown", default=None, help="write the table here too")
    ap.add_argument("extra", nargs="*", help="extra weir arguments (after --)")
    a = ap.parse_args()
    if a.weir:
        run.WEIR = Path(a.weir).resolve()
    run.TMP.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for conns in [int(c) for c in a.conns.split(",")]:
            for proxy in a.proxies.split(","):
                row = measure(proxy, conns, a.seconds, a.extra)
                rows.append(row)
                print(f"{proxy} c={conns}: {row['rps']:,.0f} req/s, {row['syscalls']:.2f} "
                      f"syscalls/req, {row['events_per_wait']:.2f} ev/wait", flush=True)
    finally:
        run.stop_all()
    out = table(rows, tracepoints())
    load = os.getloadavg()
    out += (f"\n\n{a.seconds} s per row; load average at the end "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; weir {run.WEIR}\n")
    print(out)
    if a.markdown:
        Path(a.markdown).write_text(out)


if __name__ == "__main__":
    main()
