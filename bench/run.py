#!/usr/bin/env python3
"""Weir side-by-side benchmark (`make bench`): Weir, nginx, HAProxy and the backend directly,
in one run on one machine, loopback only, every case bounded in time.

Sections (see bench/README.md for how to read them):
  1. proxy throughput and latency: HTTP/1.1 keep-alive (16, 128 connections), HTTP/2 (h2c,
     h2load), HTTPS (HTTP/1.1 over TLS)
  2. route scale: 10 / 1,000 / 10,000 HTTPRoutes, traffic to one of the last ones
  3. control plane: translation time and RSS for 1,000 / 5,000 / 10,000 / 50,000 routes;
     propagation latency file change -> served (50 changes)
  4. memory: RSS idle and under load, Weir vs nginx vs HAProxy (all processes counted)
  5. hot update under load: 100 route changes during a wrk run; failures counted
  6. BackendTrafficPolicy cost: route 9 without and with a policy (retry, passive health,
     circuit breaker, LeastRequest), alternating rounds, HTTP/1.1 16 connections

Writes the markdown report to bench/results/latest.md (and prints it). Environment:
  BENCH_QUICK=1        a few seconds per case (smoke run)
  BENCH_DURATION=S     seconds per throughput case (default 10, quick 2)
  BENCH_SECTIONS=1,2,… run only these sections
  BENCH_NO_WAIT=1      do not wait for compilers to finish before measuring
  BENCH_OUT=PATH       also write the report there (e.g. a named results file)
"""

import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TMP = HERE / "results" / "tmp"
WEIR = ROOT / "target" / "release" / "weir"

QUICK = os.environ.get("BENCH_QUICK") == "1"
DURATION = int(os.environ.get("BENCH_DURATION", "2" if QUICK else "10"))
WARMUP = 1 if QUICK else 2
SECTIONS = {int(s) for s in os.environ.get("BENCH_SECTIONS", "1,2,3,4,5,6").split(",") if s}
# Section 1 runs every system this many times, interleaved (weir, nginx, haproxy, direct,
# then again), and reports each case's median: on a shared or noisy machine a slow spell
# then hits every system alike instead of one system's whole run.
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "3")))

# CPU layout on a 2-core machine: the proxy under test and the backend share core 0; the load
# generator has core 1 to itself (wrk costs less per request than any proxy, so core 0 is the
# bottleneck and differences between proxies show). With more cores, the same two are used.
PROXY_CPU = os.environ.get("BENCH_PROXY_CPU", "0")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")
BACKEND_CPU = os.environ.get("BENCH_BACKEND_CPU", PROXY_CPU)

PORTS = {
    "backend_http": 19000,
    "backend_h2c": 19001,
    "backend_https": 19002,
    "weir_offset": 20000,  # listeners on 80/443 -> 20080/20443
    "weir_admin": 20901,
    "nginx_http": 21080,
    "nginx_h2c": 21081,
    "nginx_https": 21443,
    "haproxy_http": 22080,
    "haproxy_https": 22443,
}
WEIR_HTTP = PORTS["weir_offset"] + 80
WEIR_HTTPS = PORTS["weir_offset"] + 443
DOMAIN = "bench.test"

# ---------------------------------------------------------------------------------------
# processes


class Proc:
    """A child process in its own process group, stopped on exit."""

    live = []

    def __init__(self, name, argv, cpu=None, log=None, env=None):
        self.name = name
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + list(argv)
        self.log_path = TMP / f"{log or name}.log"
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        Proc.live.append(self)

    @property
    def pid(self):
        return self.p.pid

    def stop(self, timeout=10):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self.log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    def alive(self):
        return self.p.poll() is None


def stop_all():
    for p in list(Proc.live):
        p.stop()


def wait_port(port, timeout=30, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited; see {proc.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def http_get(port, host, path, timeout=2.0):
    """Status of one GET over a fresh connection (None on a socket error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError:
        return None
    finally:
        conn.close()


def tree_pids(root_pid):
    """root_pid and all its descendants (nginx master + workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
        except OSError:
            continue
    out, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(root_pid, field="VmRSS"):
    """Summed RSS of a process tree (every worker counted), in MB."""
    return sum(status_kb(p, field) for p in tree_pids(root_pid)) / 1024


def proxy_root(proc):
    """The pid whose tree is the proxy (taskset execs, so it is the child itself)."""
    return proc.pid


class RssSampler:
    """Peak summed RSS of a process tree while a load runs."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self):
        self._stop.set()
        self.t.join()
        return self.peak


# ---------------------------------------------------------------------------------------
# configuration generation


def ensure_cert():
    tls = TMP / "tls"
    if (tls / "bench.pem").exists():
        return
    tls.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "30", "-keyout", str(tls / "tls.key"), "-out", str(tls / "tls.crt"),
         "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN}"],
        check=True, capture_output=True,
    )
    (tls / "bench.pem").write_bytes((tls / "tls.crt").read_bytes() + (tls / "tls.key").read_bytes())


def host(i):
    return f"app-{i}.{DOMAIN}"


def prefix(i):
    return f"/svc-{i}"


def route_yaml(name, hostname, path):
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: default
spec:
  parentRefs:
    - name: bench
  hostnames: ["{hostname}"]
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: {path}
      backendRefs:
        - name: backend
          port: 80
"""


# The BackendTrafficPolicy whose cost section 6 and `callgrind.py --policy` measure: every
# block issue 21 names for the request path (retry, passive health, circuit breaker, least
# request), with limits far above the bench's load so that nothing trips and every request
# takes the normal path through each block's bookkeeping.
POLICY_NAME = "bench-resilient"


POLICY_BLOCKS = {
    "retry": """  retry:
    numRetries: 2
    retryOn:
      triggers: [connect-failure]
      httpStatusCodes: [503]
""",
    "health": """  healthCheck:
    passive:
      consecutive5XxErrors: 5
""",
    "breaker": """  circuitBreaker:
    maxConnections: 100000
    maxPendingRequests: 100000
    maxParallelRequests: 100000
    maxParallelRetries: 100000
""",
    "leastrequest": """  loadBalancer:
    type: LeastRequest
""",
}


def policy_yaml(route_name, blocks=tuple(POLICY_BLOCKS)):
    return f"""apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: {POLICY_NAME}
  namespace: default
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
      name: {route_name}
""" + "".join(POLICY_BLOCKS[b] for b in blocks)


def weir_config(n_routes, policy_on=None, blocks=tuple(POLICY_BLOCKS)):
    """A config dir for Weir with n_routes HTTPRoutes (distinct hosts and paths), split into
    files of 500 routes, plus live.yaml holding the route the update tests change. With
    policy_on=i, also the bench's BackendTrafficPolicy (`policy_yaml`, those blocks) on
    route r-i."""
    if policy_on is not None:
        d = TMP / f"weir-{n_routes}-policy-{policy_on}-{'-'.join(blocks)}"
        if not (d / ".complete").exists():
            if d.exists():
                shutil.rmtree(d)
            shutil.copytree(weir_config(n_routes), d)
            (d / ".complete").unlink()
            (d / "policy.yaml").write_text(policy_yaml(f"r-{policy_on}", blocks))
            (d / ".complete").write_text("")
        return d
    d = TMP / f"weir-{n_routes}"
    if (d / ".complete").exists():
        return d
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    crt = (TMP / "tls" / "tls.crt").read_bytes()
    key = (TMP / "tls" / "tls.key").read_bytes()
    import base64

    (d / "gateway.yaml").write_text(f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: weir
spec:
  controllerName: weir.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bench
  namespace: default
spec:
  gatewayClassName: weir
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes:
        namespaces:
          from: All
    - name: https
      protocol: HTTPS
      port: 443
      tls:
        mode: Terminate
        certificateRefs:
          - kind: Secret
            name: bench-tls
      allowedRoutes:
        namespaces:
          from: All
---
apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: {base64.b64encode(crt).decode()}
  tls.key: {base64.b64encode(key).decode()}
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: default
spec:
  ports:
    - name: http
      port: 80
      targetPort: {PORTS["backend_http"]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-local
  namespace: default
  labels:
    kubernetes.io/service-name: backend
addressType: IPv4
ports:
  - name: http
    port: {PORTS["backend_http"]}
    protocol: TCP
endpoints:
  - addresses: ["127.0.0.1"]
    conditions:
      ready: true
""")
    per_file = 500
    for start in range(0, n_routes, per_file):
        docs = [route_yaml(f"r-{i}", host(i), prefix(i))
                for i in range(start, min(n_routes, start + per_file))]
        (d / f"routes-{start // per_file:04d}.yaml").write_text("---\n".join(docs))
    write_live_route(d, 0)
    (d / ".complete").write_text("")
    return d


def write_live_route(d, k):
    """Point the route `live` (host live.bench.test) at path /gen-k; atomic replace."""
    tmp = d / ".live.yaml.tmp"
    tmp.write_text(route_yaml("live", f"live.{DOMAIN}", f"/gen-{k}"))
    os.replace(tmp, d / "live.yaml")


def fill(template, **extra):
    values = {k: str(v) for k, v in PORTS.items()}
    values["tmp"] = str(TMP)
    values.update(extra)
    return string.Template((HERE / template).read_text()).substitute(values)


def nginx_config(n_routes):
    servers = []
    for i in range(n_routes):
        servers.append(
            f"    server {{ listen 127.0.0.1:{PORTS['nginx_http']}; "
            f"listen 127.0.0.1:{PORTS['nginx_h2c']} http2; "
            f"listen 127.0.0.1:{PORTS['nginx_https']} ssl http2; "
            f"server_name {host(i)}; "
            f"location {prefix(i)}/ {{ proxy_pass http://backend; }} "
            f"location = {prefix(i)} {{ proxy_pass http://backend; }} }}"
        )
    path = TMP / f"proxy-nginx-{n_routes}.conf"
    path.write_text(fill("proxy-nginx.conf.tmpl", servers="\n".join(servers)))
    return path


def haproxy_config(n_routes):
    rules = []
    for i in range(n_routes):
        rules.append(
            f"    use_backend app if {{ req.hdr(host),lower -m str {host(i)} }} "
            f"{{ path -m str {prefix(i)} }} || {{ req.hdr(host),lower -m str {host(i)} }} "
            f"{{ path_beg {prefix(i)}/ }}"
        )
    path = TMP / f"proxy-haproxy-{n_routes}.cfg"
    path.write_text(fill("proxy-haproxy.cfg.tmpl", rules="\n".join(rules)))
    return path


# ---------------------------------------------------------------------------------------
# the systems under test


def start_backend():
    (TMP / "nginx-tmp").mkdir(exist_ok=True)
    conf = TMP / "backend-nginx.conf"
    conf.write_text(fill("backend-nginx.conf.tmpl"))
    p = Proc("backend", ["nginx", "-p", str(TMP), "-c", str(conf)], cpu=BACKEND_CPU)
    wait_port(PORTS["backend_http"], proc=p)
    return p


def start_weir(config_dir, debounce="50ms", log="weir"):
    p = Proc(
        "weir",
        [str(WEIR), "run", "--config-dir", str(config_dir), "--bind", "127.0.0.1",
         "--listener-port-offset", str(PORTS["weir_offset"]),
         "--admin-addr", f"127.0.0.1:{PORTS['weir_admin']}", "--log-level", "warn", "--access-log", "off",
         "--worker-threads", "1", "--debounce", debounce],
        cpu=PROXY_CPU, log=log,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if not p.alive():
            raise RuntimeError(f"weir exited; see {p.log_path}")
        if http_get(PORTS["weir_admin"], "localhost", "/readyz") == 200:
            return p
        time.sleep(0.05)
    raise RuntimeError("weir did not become ready within 300s")


def start_nginx(n_routes):
    (TMP / "nginx-tmp").mkdir(exist_ok=True)
    conf = nginx_config(n_routes)
    p = Proc("nginx", ["nginx", "-p", str(TMP), "-c", str(conf)], cpu=PROXY_CPU)
    wait_port(PORTS["nginx_http"], proc=p)
    return p


def start_haproxy(n_routes):
    conf = haproxy_config(n_routes)
    p = Proc("haproxy", ["haproxy", "-W", "-db", "-f", str(conf)], cpu=PROXY_CPU)
    wait_port(PORTS["haproxy_http"], proc=p)
    return p


def weir_metrics():
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['weir_admin']}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def check_policy(blocks=tuple(POLICY_BLOCKS)):
    """Raise unless the running weir's /status has the bench's BackendTrafficPolicy Accepted
    (and nothing of it not Accepted), and its snapshot carries the policy's balancer: a
    policy that is refused or not placed on the route would measure nothing."""
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['weir_admin']}/status", timeout=10) as r:
        items = json.load(r)["items"]
    found = [i for i in items if i.get("kind") == "BackendTrafficPolicy"
             and i.get("metadata", {}).get("name") == POLICY_NAME]
    if not found:
        raise RuntimeError(f"BackendTrafficPolicy {POLICY_NAME} missing from /status")
    conditions = [c for a in (found[0].get("status") or {}).get("ancestors", [])
                  for c in a.get("conditions", [])]
    accepted = [c for c in conditions if c.get("type") == "Accepted"]
    if not accepted or any(c.get("status") != "True" for c in accepted):
        raise RuntimeError(f"BackendTrafficPolicy {POLICY_NAME} not Accepted: "
                           f"{json.dumps(found[0].get('status'))}")
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['weir_admin']}/debug/snapshot",
                                timeout=10) as r:
        dump = r.read().decode()
    if "leastrequest" in blocks and "LeastRequest" not in dump:
        raise RuntimeError("the policy is Accepted but the snapshot has no LeastRequest balancer")
    return [f"{c['type']}={c['status']} ({c.get('reason', '')})" for c in conditions]


# ---------------------------------------------------------------------------------------
# load generators


def wrk(port, hostname, path, conns, duration, https=False):
    scheme = "https" if https else "http"
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
            "--timeout", "5s", "-s", str(HERE / "report.lua"), "-H", f"Host: {hostname}",
            f"{scheme}://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"WRK_JSON (\{.*\})", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    j = json.loads(m.group(1))
    errors = j["connect"] + j["read"] + j["write"] + j["timeout"]
    return {
        "rps": j["requests"] / (j["duration_us"] / 1e6),
        "p50": j["p50"] / 1000, "p99": j["p99"] / 1000, "p999": j["p999"] / 1000,
        "non2xx": j["status"], "socket_errors": errors, "requests": j["requests"],
    }


def h2load(port, hostname, path, conns, streams, duration, https=False):
    scheme = "https" if https else "http"
    logf = TMP / "h2load.log"
    argv = ["taskset", "-c", LOAD_CPU, "h2load", "-c", str(conns), "-m", str(streams),
            "-D", str(duration), "--warm-up-time", "1", "--log-file", str(logf),
            "-H", f":authority: {hostname}", f"{scheme}://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out.stdout)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    if not (m and req and codes):
        raise RuntimeError(f"h2load failed: {out.stdout}\n{out.stderr}")
    lat = []
    with open(logf) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, int(len(lat) * q))] / 1000 if lat else 0.0

    return {
        "rps": float(m.group(3)), "p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999),
        "non2xx": int(codes.group(3)) + int(codes.group(4)),
        "socket_errors": int(req.group(6)), "requests": int(req.group(4)),
    }


MODES = [
    # (key, label)
    ("h1-16", "HTTP/1.1 keep-alive, 16 conns"),
    ("h1-128", "HTTP/1.1 keep-alive, 128 conns"),
    ("h2c", "HTTP/2 (h2c), 16 conns x 10 streams"),
    ("https", "HTTPS (TLS 1.3, HTTP/1.1), 16 conns"),
]


def run_mode(mode, ports, hostname, path, duration):
    http_port, h2c_port, https_port = ports
    if mode == "h1-16":
        return wrk(http_port, hostname, path, 16, duration)
    if mode == "h1-128":
        return wrk(http_port, hostname, path, 128, duration)
    if mode == "h2c":
        return h2load(h2c_port, hostname, path, 16, 10, duration)
    if mode == "https":
        return wrk(https_port, hostname, path, 16, duration, https=True)
    raise ValueError(mode)


def warm(mode, ports, hostname, path):
    run_mode(mode, ports, hostname, path, WARMUP)


# ---------------------------------------------------------------------------------------
# sections


def fmt_ms(v):
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def section_proxies(report, memory):
    n = 10
    target = n - 1
    hostname, path = host(target), f"{prefix(target)}/x"
    systems = [
        ("direct", None, (PORTS["backend_http"], PORTS["backend_h2c"], PORTS["backend_https"])),
        ("weir", lambda: start_weir(weir_config(n)), (WEIR_HTTP, WEIR_HTTP, WEIR_HTTPS)),
        ("nginx", lambda: start_nginx(n),
         (PORTS["nginx_http"], PORTS["nginx_h2c"], PORTS["nginx_https"])),
        ("haproxy", lambda: start_haproxy(n),
         (PORTS["haproxy_http"], PORTS["haproxy_http"], PORTS["haproxy_https"])),
    ]
    runs = {}
    for round_no in range(ROUNDS):
        if ROUNDS > 1:
            print(f"  round {round_no + 1} of {ROUNDS}", flush=True)
        for name, start, ports in systems:
            proc = start() if start else None
            try:
                if proc:
                    time.sleep(0.5)
                    idle = rss_mb(proc.pid)
                    memory.setdefault(name, {"idle": idle})
                    memory[name]["idle"] = min(memory[name]["idle"], idle)
                    # Route check: the target route answers 200, an unrouted path 404.
                    ok = http_get(ports[0], hostname, path)
                    miss = http_get(ports[0], hostname, "/nope")
                    if ok != 200 or miss != 404:
                        raise RuntimeError(f"{name}: routing check failed ({ok}, {miss})")
                for mode, _ in MODES:
                    warm(mode, ports, hostname, path)
                    sampler = RssSampler(proc.pid) if proc else None
                    r = run_mode(mode, ports, hostname, path, DURATION)
                    if sampler:
                        peak = sampler.stop()
                        memory[name]["load"] = max(memory[name].get("load", 0), peak)
                    runs.setdefault((name, mode), []).append(r)
                    print(f"  {name:8} {mode:7} {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms",
                          flush=True)
            finally:
                if proc:
                    proc.stop()
    results = {}
    for key, rs in runs.items():
        # The median run by throughput, whole (its latencies belong to it); errors summed.
        median = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        results[key] = dict(median, non2xx=sum(r["non2xx"] for r in rs),
                            socket_errors=sum(r["socket_errors"] for r in rs),
                            spread=(min(r["rps"] for r in rs), max(r["rps"] for r in rs)))

    rounds = (f"; median of {ROUNDS} interleaved rounds, req/s range in brackets"
              if ROUNDS > 1 else "")
    lines = [f"## 1. Proxy throughput and latency (10 routes; route 9 of 10{rounds})", "",
             "| protocol | target | req/s | p50 ms | p99 ms | p99.9 ms | × nginx | × direct | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, label in MODES:
        ng = results.get(("nginx", mode), {}).get("rps")
        di = results.get(("direct", mode), {}).get("rps")
        for name, _, _ in systems:
            r = results.get((name, mode))
            if not r:
                continue
            xn = f"{r['rps'] / ng:.2f}" if ng else "—"
            xd = f"{r['rps'] / di:.2f}" if di else "—"
            err = r["non2xx"] + r["socket_errors"]
            rps = f"{r['rps']:.0f}"
            if ROUNDS > 1:
                lo, hi = r["spread"]
                rps += f" [{lo:.0f}–{hi:.0f}]"
            lines.append(f"| {label} | {name} | {rps} | {fmt_ms(r['p50'])} | "
                         f"{fmt_ms(r['p99'])} | {fmt_ms(r['p999'])} | {xn} | {xd} | {err} |")
    report.extend(lines + [""])
    return results


def section_scale(report):
    counts = [10, 1000, 10000]
    results = {}
    for system in ["weir", "nginx"]:
        for n in counts:
            target = n - 1
            hostname, path = host(target), f"{prefix(target)}/x"
            if system == "weir":
                proc, port = start_weir(weir_config(n)), WEIR_HTTP
            else:
                proc, port = start_nginx(n), PORTS["nginx_http"]
            try:
                if http_get(port, hostname, path) != 200:
                    raise RuntimeError(f"{system} {n}: route {target} does not answer")
                wrk(port, hostname, path, 16, WARMUP)
                r = wrk(port, hostname, path, 16, DURATION)
                r["rss"] = rss_mb(proc.pid)
                results[(system, n)] = r
                print(f"  {system} {n:>6} routes {r['rps']:>10.0f} req/s", flush=True)
            finally:
                proc.stop()
    lines = ["## 2. Route scale (HTTP/1.1, 16 conns; traffic to the last route)", "",
             "| target | routes | req/s | p99 ms | × same target at 10 routes | RSS MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for system in ["weir", "nginx"]:
        base = results[(system, 10)]["rps"]
        for n in counts:
            r = results[(system, n)]
            lines.append(f"| {system} | {n:,} | {r['rps']:.0f} | {fmt_ms(r['p99'])} | "
                         f"{r['rps'] / base:.3f} | {r['rss']:.1f} |")
    report.extend(lines + [""])
    return results


def propagation(config_dir, changes, debounce):
    """Start Weir on config_dir; `changes` times, point route `live` at a new path and time
    until that path answers 200. Returns latencies in ms."""
    write_live_route(config_dir, 0)
    proc = start_weir(config_dir, debounce=debounce, log=f"weir-prop-{debounce}")
    lat = []
    try:
        conn = None
        for k in range(1, changes + 1):
            time.sleep(0.15)  # let the previous change settle
            t0 = time.perf_counter()
            write_live_route(config_dir, k)
            deadline = t0 + 5
            while time.perf_counter() < deadline:
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", WEIR_HTTP, timeout=2)
                    conn.request("GET", f"/gen-{k}", headers={"Host": f"live.{DOMAIN}"})
                    r = conn.getresponse()
                    r.read()
                    if r.status == 200:
                        lat.append((time.perf_counter() - t0) * 1000)
                        break
                except (OSError, http.client.HTTPException):
                    conn = None
                time.sleep(0.0005)
            else:
                lat.append(float("inf"))
    finally:
        proc.stop()
        write_live_route(config_dir, 0)
    return lat


def pctl(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round((len(v) - 1) * q)))]


def section_control(report):
    counts = [1000, 5000, 10000] if QUICK else [1000, 5000, 10000, 50000]
    rows = []
    for n in counts:
        d = weir_config(n)
        t0 = time.perf_counter()
        proc = start_weir(d, log=f"weir-control-{n}")
        ready_s = time.perf_counter() - t0
        try:
            time.sleep(0.3)
            m = weir_metrics()
            count = m.get("weir_translation_duration_seconds_count", 0)
            total = m.get("weir_translation_duration_seconds_sum", 0)
            translate_ms = total / count * 1000 if count else float("nan")
            rows.append((n, translate_ms, int(count), ready_s,
                         rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")))
            print(f"  control {n:>6} routes: translate {translate_ms:.1f} ms, "
                  f"RSS {rows[-1][4]:.1f} MB", flush=True)
        finally:
            proc.stop()
    lines = ["## 3. Control plane", "",
             "| routes | translate ms | start → ready s (read YAML + translate + bind) | RSS MB | peak RSS MB |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for n, tr, count, ready_s, rss, hwm in rows:
        lines.append(f"| {n:,} | {tr:.1f} | {ready_s:.2f} | {rss:.1f} | {hwm:.1f} |")
    lines.append("")
    lines.append("Propagation: route file replaced (rename into place) → the new path answers "
                 "200, polled every 0.5 ms over one keep-alive connection.")
    lines.append("")
    lines.append("| routes loaded | --debounce | changes | p50 ms | p99 ms | max ms |")
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
    changes = 10 if QUICK else 50
    prop = {}
    for n, debounce in [(1000, "5ms"), (1000, "50ms"), (10000, "5ms")]:
        if QUICK and n > 1000:
            continue
        lat = propagation(weir_config(n), changes, debounce)
        prop[(n, debounce)] = lat
        lines.append(f"| {n:,} | {debounce} | {len(lat)} | {pctl(lat, 0.5):.1f} | "
                     f"{pctl(lat, 0.99):.1f} | {max(lat):.1f} |")
        print(f"  propagation {n} routes debounce {debounce}: p50 {pctl(lat, 0.5):.1f} ms "
              f"p99 {pctl(lat, 0.99):.1f} ms", flush=True)
    report.extend(lines + [""])
    return rows, prop


def section_memory(report, memory):
    lines = ["## 4. Memory (RSS of the whole process tree: master + workers)", "",
             "| target | idle MB | peak under load MB |", "| --- | ---: | ---: |"]
    for name in ["weir", "nginx", "haproxy"]:
        m = memory.get(name)
        if m:
            lines.append(f"| {name} | {m['idle']:.1f} | {m.get('load', 0):.1f} |")
    report.extend(lines + [""])


def section_hot_update(report):
    n = 1000
    d = weir_config(n)
    write_live_route(d, 0)
    proc = start_weir(d, log="weir-hot")
    duration = 8 if QUICK else 30
    changes = 20 if QUICK else 100
    target = n - 1
    result = {}
    try:
        gen0 = weir_metrics().get("weir_snapshot_generation", 0)

        def load():
            result["wrk"] = wrk(WEIR_HTTP, host(target), f"{prefix(target)}/x", 16, duration)

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)
        interval = (duration - 3) / changes
        for k in range(1, changes + 1):
            write_live_route(d, k)
            time.sleep(interval)
        t.join()
        time.sleep(0.3)
        gens = weir_metrics().get("weir_snapshot_generation", 0) - gen0
        live_ok = http_get(WEIR_HTTP, f"live.{DOMAIN}", f"/gen-{changes}")
    finally:
        proc.stop()
        write_live_route(d, 0)
    r = result["wrk"]
    lines = [f"## 5. Hot update under load ({n:,} routes, wrk 16 conns for {duration} s, "
             f"{changes} route changes)", "",
             "| requests | req/s | p99 ms | non-2xx | socket errors | snapshots swapped | changed route live |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
             f"| {r['requests']} | {r['rps']:.0f} | {fmt_ms(r['p99'])} | {r['non2xx']} | "
             f"{r['socket_errors']} | {gens:.0f} | {'yes' if live_ok == 200 else 'NO'} |", ""]
    print(f"  hot update: {r['non2xx']} non-2xx, {r['socket_errors']} socket errors, "
          f"{gens:.0f} swaps", flush=True)
    report.extend(lines)
    return r, gens


def section_policy(report):
    """Route 9 of 10 without a policy and with the bench's BackendTrafficPolicy (retry,
    passive health, circuit breaker, LeastRequest), one weir process each, alternating for
    ROUNDS rounds: HTTP/1.1 keep-alive, 16 connections. The instruction count of the same
    pair is `bench/callgrind.py --policy`."""
    n, target = 10, 9
    hostname, path = host(target), f"{prefix(target)}/x"
    ports = (WEIR_HTTP, WEIR_HTTP, WEIR_HTTPS)
    cases = [("no policy", weir_config(n), False),
             ("policy", weir_config(n, policy_on=target), True)]
    runs = {}
    for round_no in range(ROUNDS):
        if ROUNDS > 1:
            print(f"  round {round_no + 1} of {ROUNDS}", flush=True)
        for name, config_dir, policy in cases:
            proc = start_weir(config_dir, log=f"weir-{name.replace(' ', '-')}")
            try:
                if policy:
                    check_policy()
                if http_get(WEIR_HTTP, hostname, path) != 200:
                    raise RuntimeError(f"{name}: route check failed")
                warm("h1-16", ports, hostname, path)
                r = run_mode("h1-16", ports, hostname, path, DURATION)
                runs.setdefault(name, []).append(r)
                print(f"  {name:9} h1-16 {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms",
                      flush=True)
            finally:
                proc.stop()
    lines = [f"## 6. BackendTrafficPolicy cost (route 9 of 10, HTTP/1.1 keep-alive, 16 conns; "
             f"median of {ROUNDS} alternating rounds, range in brackets)", "",
             "Policy: retry (numRetries 2, connect-failure and 503), healthCheck.passive "
             "(consecutive5XxErrors 5), circuitBreaker (limits far above the load), "
             "loadBalancer LeastRequest; one endpoint. Issue 21's bound: the policy costs "
             "less than 10% per request. Instructions per request: "
             "`python3 bench/callgrind.py --policy`.", "",
             "| route | req/s | p50 ms | p99 ms | × no policy | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    base = None
    results = {}
    for name, _, _ in cases:
        rs = runs[name]
        r = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        lo, hi = min(x["rps"] for x in rs), max(x["rps"] for x in rs)
        err = sum(x["non2xx"] + x["socket_errors"] for x in rs)
        base = base or r["rps"]
        results[name] = r["rps"]
        lines.append(f"| {name} | {r['rps']:.0f} [{lo:.0f}–{hi:.0f}] | {fmt_ms(r['p50'])} | "
                     f"{fmt_ms(r['p99'])} | {r['rps'] / base:.3f} | {err} |")
    report.extend(lines + [""])
    return results


# ---------------------------------------------------------------------------------------


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = status_kb("self", "VmRSS")  # placeholder to keep status_kb warm
    del mem
    total = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) // 1024 // 1024
    versions = []
    for argv in (["nginx", "-v"], ["haproxy", "-v"], ["wrk", "-v"], ["h2load", "--version"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            first = (out.stdout + out.stderr).strip().splitlines()
            versions.append(first[0] if first else argv[0])
        except OSError:
            versions.append(f"{argv[0]}: missing")
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "crates"],
                           capture_output=True, text=True).stdout.strip()
    return [
        f"- machine: `{platform.uname().system} {platform.uname().release} "
        f"{platform.uname().machine}`, {os.cpu_count()} CPUs ({model}), {total} GiB",
        f"- weir: `{git}{' + uncommitted changes' if dirty else ''}`, release build, "
        f"`--worker-threads 1`",
        f"- peers: {'; '.join(versions)}",
        f"- pinning: proxy on CPU {PROXY_CPU}, backend (nginx, 1 worker, `return 200`) on CPU "
        f"{BACKEND_CPU}, load generator on CPU {LOAD_CPU}; every proxy runs 1 worker/thread",
        f"- {DURATION} s per case after {WARMUP} s warm-up"
        f"{' (BENCH_QUICK: smoke run, not for comparison)' if QUICK else ''}",
    ]


def wait_quiet():
    if os.environ.get("BENCH_NO_WAIT") == "1":
        return "not checked (BENCH_NO_WAIT=1)"
    deadline = time.time() + (30 if QUICK else 900)
    waited = 0
    while time.time() < deadline:
        busy = subprocess.run(["pgrep", "-x", "rustc"], capture_output=True).returncode == 0
        if not busy:
            return "quiet (no rustc running)" + (f" after waiting {waited} s" if waited else "")
        if waited == 0:
            print("waiting for compilers (rustc) to finish before measuring…", flush=True)
        time.sleep(5)
        waited += 5
    return "NOT quiet: rustc still running when measuring started"


class CompilerWatch:
    """Notes which sections ran while a compiler (rustc) was running on the machine."""

    def __init__(self):
        self.section, self.busy, self._stop = None, set(), threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.wait(2):
            if subprocess.run(["pgrep", "-x", "rustc"], capture_output=True).returncode == 0:
                self.busy.add(self.section)

    def stop(self):
        self._stop.set()
        self.t.join()
        return sorted(s for s in self.busy if s)


def main():
    for tool in ["wrk", "h2load", "nginx", "haproxy", "taskset", "openssl"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run bench/run.sh (installs it) or apt-get install it")
    if not WEIR.exists():
        sys.exit(f"{WEIR} is missing: cargo build --release --bins")
    if os.cpu_count() < 2:
        sys.exit("needs at least 2 CPUs (proxy on one, load on the other)")
    TMP.mkdir(parents=True, exist_ok=True)
    ensure_cert()
    quiet = wait_quiet()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report = [f"# Weir benchmark — {started}", ""] + machine() + [f"- machine state: {quiet}", ""]
    memory = {}
    backend = start_backend()
    watch = CompilerWatch()
    try:
        if 1 in SECTIONS or 4 in SECTIONS:
            print("1. proxies", flush=True)
            watch.section = "1"
            section_proxies(report, memory)
        if 2 in SECTIONS:
            print("2. route scale", flush=True)
            watch.section = "2"
            section_scale(report)
        if 3 in SECTIONS:
            print("3. control plane", flush=True)
            watch.section = "3"
            section_control(report)
        if 4 in SECTIONS and memory:
            section_memory(report, memory)
        if 5 in SECTIONS:
            print("5. hot update", flush=True)
            watch.section = "5"
            section_hot_update(report)
        if 6 in SECTIONS:
            print("6. BackendTrafficPolicy cost", flush=True)
            watch.section = "6"
            section_policy(report)
    finally:
        stop_all()
    busy = watch.stop()
    if busy:
        at = next(i for i, line in enumerate(report) if line.startswith("- machine state"))
        report.insert(at + 1,
                      f"- **rustc ran during section(s) {', '.join(busy)}: those numbers are "
                      f"disturbed; run again on a quiet machine**")
    text = "\n".join(report) + "\n"
    out = HERE / "results" / "latest.md"
    out.write_text(text)
    if os.environ.get("BENCH_OUT"):
        Path(os.environ["BENCH_OUT"]).write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
