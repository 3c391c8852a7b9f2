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
                               [--trace-sample F] [--policy [--policy-blocks B,B]] [--weir PATH]
                               [--case NAME[,NAME...] | --case all] [--top N]

`--policy` measures, in the same run with the same binary, route 9 without a policy (the plain
config, as without the flag), then in a second weir process route 9 under the bench's
BackendTrafficPolicy (retry, passive health, circuit breaker, LeastRequest: `run.policy_yaml`;
checked Accepted on /status first) and route 8 (no policy) beside it, and prints each with
its ratio to the first. `--policy-blocks retry,health,breaker,leastrequest` keeps only some
of the policy's blocks, to see what each costs.

`--case NAME` measures section 7's policy rows (`run.POLICY_CASES`: ratelimit-local,
ratelimit-local-noheaders, ratelimit-global, gzip, cache-hit, jwt-rs256, jwt-es256, jwt-eddsa, basic-sha, basic-bcrypt,
extauth-http, extauth-grpc, inference; `--case all` for every one): per case one weir process
with the same config `make bench` writes (`run.policy_case_config`) and the same helpers
(redis-server, weir-test-auth, weir-test-epp), checked Accepted and applied on route 9
(`run.check_case`), then route 8 (no policy) and route 9 (the policy) with the case's path
and headers; prints Ir per request of each and the ratio.

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
from pathlib import Path

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
    ap.add_argument("--policy", action="store_true",
                    help="also measure route 9 under the bench's BackendTrafficPolicy (retry, "
                         "passive health, circuit breaker, LeastRequest; run.policy_yaml), in a "
                         "second weir process of the same run, and route 8 (no policy) next to "
                         "it; prints each and the ratio to the route without a policy")
    ap.add_argument("--policy-blocks", metavar="B,B",
                    help="with --policy: only these blocks of the policy (of "
                         f"{','.join(run.POLICY_BLOCKS)}), to see what each costs")
    ap.add_argument("--case", metavar="NAME[,NAME]",
                    help="section 7's policy rows: route 8 (no policy) and route 9 (the case's "
                         f"policy) in one weir process per case; of {','.join(run.CASES_BY_NAME)} "
                         "or all")
    ap.add_argument("--weir", metavar="PATH",
                    help="the weir binary to run (default target/release/weir), e.g. a build "
                         "copied aside to compare with")
    ap.add_argument("--top", type=int, default=None,
                    help="lines of callgrind_annotate to print per measurement "
                         "(default 80; 40 with --policy)")
    args = ap.parse_args()
    if args.policy and args.proxy != "weir":
        ap.error("--policy measures weir")
    top = args.top if args.top is not None else (40 if args.policy or args.case else 80)
    case_names = []
    if args.case:
        case_names = (list(run.CASES_BY_NAME) if args.case == "all"
                      else [c for c in args.case.split(",") if c])
        unknown = [c for c in case_names if c not in run.CASES_BY_NAME]
        if unknown or args.proxy != "weir" or args.policy or args.h2 or args.tls:
            ap.error(f"--case takes names of {','.join(run.CASES_BY_NAME)} (or all), measures "
                     "weir over HTTP/1.1 and does not go with --policy")
    blocks = tuple(run.POLICY_BLOCKS)
    if args.policy_blocks:
        blocks = tuple(b for b in args.policy_blocks.split(",") if b)
        if not args.policy or not blocks or any(b not in run.POLICY_BLOCKS for b in blocks):
            ap.error(f"--policy-blocks needs --policy and blocks of {','.join(run.POLICY_BLOCKS)}")

    if args.weir:
        run.WEIR = Path(args.weir).resolve()
    run.TMP.mkdir(parents=True, exist_ok=True)
    run.ensure_cert()
    for f in glob.glob(str(run.TMP / "callgrind.out") + "*"):
        os.remove(f)
    # (process tag, config dir, the policy's blocks or None, [(label, route index)], section 7's
    # case or None): one proxy process per entry.
    if args.proxy == "nginx":
        cases = [("nginx", None, None, [("nginx, route 9", 9)], None)]
    elif case_names:
        cases = []
        for name in case_names:
            c = run.CASES_BY_NAME[name]
            cases.append((f"weir-case-{name}", None, None,
                          [(f"{name}: no policy, route 8", run.TWIN_ROUTE),
                           (f"{name}: {c.label}, route 9", run.POLICY_ROUTE)], c))
    else:
        cases = [("weir", run.weir_config(10), None, [("no policy, route 9", 9)], None)]
        if args.policy:
            cases.append(("weir-policy", run.weir_config(10, policy_on=9, blocks=blocks),
                          blocks, [(f"policy ({'+'.join(blocks)}), route 9", 9),
                                   ("no policy, route 8 (policy on 9)", 8)], None))
    backend = run.start_backend()
    measured = []
    try:
        for tag, config_dir, policy, routes, case in cases:
            if case is None:
                measured += measure(args, tag, config_dir, policy, routes)
                continue
            try:
                config_dir = run.policy_case_config(case)
            except run.SkipCase as e:
                print(f"{case.name}: skipped ({e})", flush=True)
                continue
            helpers = []
            try:
                for _, start in case.procs:
                    helpers.append(start())
                measured += measure(args, tag, config_dir, policy, routes, case=case)
            finally:
                for h in reversed(helpers):
                    h.stop()
    finally:
        backend.stop()
    results = []
    for label, dump in measured:
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump],
                             capture_output=True, text=True).stdout
        events, totals = [], []
        for line in ann.splitlines():
            if line.startswith("Events recorded:"):
                events = line.split(":", 1)[1].split()
            if "PROGRAM TOTALS" in line:
                totals = [int(v.replace(",", "")) for v in line.split() if v[0].isdigit()]
        print(f"== {label}\nfile: {dump}")
        for name, total in zip(events, totals):
            print(f"{name} per request: {total / args.n:,.0f} ({total:,} over {args.n} requests)")
        print("\n".join(ann.splitlines()[:top]))
        print()
        results.append((label, totals[0] / args.n if totals else float("nan")))
    if case_names:
        # Pairs: each case's route 8 then route 9, from one process.
        print(f"summary (Ir per request, -n {args.n} -c {args.c}; route 9 with the policy "
              "against route 8 without it, same process):")
        for (label8, ir8), (label9, ir9) in zip(results[0::2], results[1::2]):
            print(f"  {label9:72} {ir9:>9,.0f}  vs {ir8:>9,.0f}  × {ir9 / ir8:.3f} "
                  f"({ir9 - ir8:+,.0f})")
    elif len(results) > 1:
        base = results[0][1]
        print(f"summary (Ir per request, -n {args.n} -c {args.c}"
              f"{' --h2' if args.h2 else ''}{' --tls' if args.tls else ''}):")
        for label, ir in results:
            print(f"  {label:52} {ir:>9,.0f}  × {ir / base:.3f} ({ir - base:+,.0f})")


def measure(args, tag, config_dir, policy, routes, case=None):
    """Start the proxy under callgrind, then for each (label, route): warm up, zero the
    counters, send N requests, dump. Returns [(label, dump file)]. With a section 7 `case`:
    its weir arguments, path and headers, and `run.check_case` before measuring."""
    path = case.path if case else "/x"
    headers = case.headers() if case else {}
    out = run.TMP / f"callgrind.out.{tag}"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if args.cache:
        valgrind.append("--cache-sim=yes")
        if args.ll:
            valgrind.append(f"--LL={args.ll}")
    if args.proxy == "weir":
        argv = [str(run.WEIR), "run", "--config-dir", str(config_dir), "--bind", "127.0.0.1",
                "--listener-port-offset", str(run.PORTS["weir_offset"]),
                "--admin-addr", f"127.0.0.1:{run.PORTS['weir_admin']}", "--log-level", "warn",
                "--access-log", "on" if args.access_log else "off",
                "--worker-threads", "1"]
        if case:
            argv += list(case.weir_args)
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
    p = run.Proc(f"{tag}-callgrind", valgrind + argv, cpu=run.PROXY_CPU)
    dumps = []
    try:
        if args.proxy == "weir":
            deadline = time.time() + 120
            while run.http_get(run.PORTS["weir_admin"], "localhost", "/readyz",
                               timeout=5) != 200:
                if time.time() > deadline or not p.alive():
                    raise RuntimeError(f"weir under valgrind not ready; see {p.log_path}")
                time.sleep(0.2)
            if case:
                print(f"{tag}: " + (", ".join(run.check_case(case, headers)) or "no status")
                      + "; applied on route 9, not on route 8", flush=True)
            if policy:
                print(f"{tag}: BackendTrafficPolicy {run.POLICY_NAME} ({'+'.join(policy)}): "
                      + ", ".join(run.check_policy(policy)), flush=True)
        else:
            run.wait_port(ports["http"], timeout=120, proc=p)
        port = ports["https"] if args.tls else ports["http"]
        scheme = "https" if args.tls else "http"
        proto = [] if args.h2 else ["--h1"]

        def load(n, i):
            url = f"{scheme}://127.0.0.1:{port}{run.prefix(i)}{path}"
            hdr = ["-H", f":authority: {run.host(i)}"]
            hdr += [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
            r = subprocess.run(["h2load", "-n", str(n), "-c", str(args.c), "-m", str(args.m)] + proto
                               + hdr + [url], capture_output=True, text=True, timeout=600)
            # Every request answered 2xx: a 404 or 503 would measure another path.
            if f"{n} succeeded" not in r.stdout or f"status codes: {n} 2xx" not in r.stdout:
                raise RuntimeError(r.stdout + r.stderr)

        for k, (label, i) in enumerate(routes, start=1):
            load(args.warm, i)
            subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True,
                           capture_output=True)
            load(args.n, i)
            subprocess.run(["callgrind_control", "-d", f"measured-{k}", str(p.pid)],
                           check=True, capture_output=True)
            dump = f"{out}.{k}"
            deadline = time.time() + 60
            while not os.path.exists(dump):
                if time.time() > deadline:
                    raise RuntimeError(f"no callgrind dump {dump}")
                time.sleep(0.2)
            dumps.append((label, dump))
    finally:
        p.stop()
    return dumps


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
