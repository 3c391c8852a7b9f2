#!/usr/bin/env python3
"""Instructions per proxied request, from callgrind: stable on a noisy machine, so use it to
compare builds (`make bench` numbers move with whatever else the machine does).

Runs target/release/weir under `valgrind --tool=callgrind` with one worker thread and 10
routes, sends WARM requests, zeroes the counters, sends N requests over C keep-alive
connections (HTTP/1.1 by default; --h2 for h2c), dumps, and prints Ir per request plus the
top functions (inclusive). `--proxy nginx` measures the reference nginx instead (the same
config `make bench` runs, one process: `master_process off`), so the two compare on the same
counter. Usage:

    python3 bench/callgrind.py [-n 20000] [-c 4] [-m 1] [--h2] [--tls] [--cache] [--proxy nginx]
                               [--trace-sample F]

`--trace-sample F` turns weir's OpenTelemetry tracing on (`--otlp-endpoint`, OTLP/HTTP) with
that sample, exporting to a sink in this script that answers every export with 200, so the
count includes making, queueing, encoding and sending the spans.

Needs valgrind and h2load (nghttp2-client). Output files stay in bench/results/tmp/.
"""

import argparse
import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("--h2", action="store_true")
    ap.add_argument("-m", type=int, default=1, help="streams per connection (h2load -m)")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--warm", type=int, default=2000)
    ap.add_argument("--cache", action="store_true",
                    help="simulate the caches too (D1/LL misses per request; slower)")
    ap.add_argument("--ll", metavar="BYTES,ASSOC,LINE",
                    help="with --cache: the last-level cache to simulate (valgrind's --LL; "
                         "e.g. 524288,8,64 for a 512 KB L2 of one core instead of the host's L3)")
    ap.add_argument("--proxy", choices=["weir", "nginx"], default="weir")
    ap.add_argument("--access-log", action="store_true",
                    help="weir with its access log on (the default of `weir run`; off otherwise, "
                         "as the bench's nginx has access_log off)")
    ap.add_argument("--trace-sample", type=float, metavar="F",
                    help="weir with tracing on (OTLP/HTTP to a local sink), sampling F of the requests")
    args = ap.parse_args()

    run.TMP.mkdir(parents=True, exist_ok=True)
    run.ensure_cert()
    out = run.TMP / "callgrind.out"
    for f in glob.glob(str(out) + "*"):
        os.remove(f)
    backend = run.start_backend()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if args.cache:
        valgrind.append("--cache-sim=yes")
        if args.ll:
            valgrind.append(f"--LL={args.ll}")
    if args.proxy == "weir":
        d = run.weir_config(10)
        argv = [str(run.WEIR), "run", "--config-dir", str(d), "--bind", "127.0.0.1",
                "--listener-port-offset", str(run.PORTS["weir_offset"]),
                "--admin-addr", f"127.0.0.1:{run.PORTS['weir_admin']}", "--log-level", "warn",
                "--access-log", "on" if args.access_log else "off",
                "--worker-threads", "1"]
        if args.trace_sample is not None:
            sink = otlp_sink()
            argv += ["--otlp-endpoint", f"http://127.0.0.1:{sink.server_port}",
                     "--otlp-protocol", "http", "--trace-sample", str(args.trace_sample)]
        ports = {"http": run.WEIR_HTTP, "https": run.WEIR_HTTPS}
    else:
        (run.TMP / "nginx-tmp").mkdir(exist_ok=True)
        conf = run.nginx_config(10)
        argv = ["nginx", "-p", str(run.TMP), "-c", str(conf), "-g", "master_process off;"]
        ports = {"http": run.PORTS["nginx_http"], "https": run.PORTS["nginx_https"]}
    if args.h2 and not args.tls and args.proxy == "nginx":
        ports["http"] = run.PORTS["nginx_h2c"]
    p = run.Proc(f"{args.proxy}-callgrind", valgrind + argv, cpu=run.PROXY_CPU)
    try:
        if args.proxy == "weir":
            deadline = time.time() + 120
            while run.http_get(run.PORTS["weir_admin"], "localhost", "/readyz",
                               timeout=5) != 200:
                if time.time() > deadline or not p.alive():
                    raise RuntimeError(f"weir under valgrind not ready; see {p.log_path}")
                time.sleep(0.2)
        else:
            run.wait_port(ports["http"], timeout=120, proc=p)
        port = ports["https"] if args.tls else ports["http"]
        scheme = "https" if args.tls else "http"
        url = f"{scheme}://127.0.0.1:{port}{run.prefix(9)}/x"
        proto = [] if args.h2 else ["--h1"]
        hdr = ["-H", f":authority: {run.host(9)}"]

        def load(n):
            r = subprocess.run(["h2load", "-n", str(n), "-c", str(args.c), "-m", str(args.m)] + proto
                               + hdr + [url], capture_output=True, text=True, timeout=600)
            if f"{n} succeeded" not in r.stdout:
                raise RuntimeError(r.stdout + r.stderr)

        load(args.warm)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
        load(args.n)
        subprocess.run(["callgrind_control", "-d", "measured", str(p.pid)], check=True,
                       capture_output=True)
    finally:
        p.stop()
        backend.stop()
    dumps = sorted(glob.glob(str(out) + "*"), key=os.path.getmtime)
    measured = [f for f in dumps if f.endswith(".1")] or dumps[:1]
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", measured[0]],
                         capture_output=True, text=True).stdout
    events, totals = [], []
    for line in ann.splitlines():
        if line.startswith("Events recorded:"):
            events = line.split(":", 1)[1].split()
        if "PROGRAM TOTALS" in line:
            totals = [int(v.replace(",", "")) for v in line.split() if v[0].isdigit()]
    print(f"file: {measured[0]}")
    for name, total in zip(events, totals):
        print(f"{name} per request: {total / args.n:,.0f} ({total:,} over {args.n} requests)")
    print("\n".join(ann.splitlines()[:80]))


def otlp_sink():
    """An OTLP/HTTP endpoint that accepts every export (200, empty protobuf response) and
    counts the bytes, on a free loopback port, served from a thread."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    main()
