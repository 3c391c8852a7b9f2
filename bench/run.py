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
  7. policy rows (issues 22-24): rate limits (local; global against a local redis-server),
     gzip, a response-cache hit, JWT (RS256, ES256, EdDSA), basic auth, ext auth (HTTP,
     gRPC) and an InferencePool with the test picker, each on route 9 beside route 8
     without it in the same weir process

Writes the markdown report to bench/results/latest.md (and prints it). Environment:
  BENCH_QUICK=1        a few seconds per case (smoke run)
  BENCH_DURATION=S     seconds per throughput case (default 10, quick 2)
  BENCH_SECTIONS=1,2,… run only these sections
  BENCH_NO_WAIT=1      do not wait for compilers to finish before measuring
  BENCH_OUT=PATH       also write the report there (e.g. a named results file)
  BENCH_CASES=a,b      section 7: only these cases (names in POLICY_CASES)
  BENCH_WEIR=PATH      the weir binary (default target/release/weir)
  BENCH_TESTKIT_BIN=D  where weir-test-auth / weir-test-epp are (default target/release)
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
# Generated configs are cached by name, and name ports: a shifted run (BENCH_PORT_SHIFT, below)
# keeps its own directory.
_SHIFT = int(os.environ.get("BENCH_PORT_SHIFT", "0"))
TMP = HERE / "results" / ("tmp" if _SHIFT == 0 else f"tmp-{_SHIFT}")
WEIR = Path(os.environ.get("BENCH_WEIR", str(ROOT / "target" / "release" / "weir")))

QUICK = os.environ.get("BENCH_QUICK") == "1"
DURATION = int(os.environ.get("BENCH_DURATION", "2" if QUICK else "10"))
WARMUP = 1 if QUICK else 2
SECTIONS = {int(s) for s in os.environ.get("BENCH_SECTIONS", "1,2,3,4,5,6,7").split(",") if s}
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
    # section 7's helpers (`policy_case_*`)
    "redis": 19100,
    "ext_auth_http": 19101,
    "ext_auth_grpc": 19102,
    "epp": 19103,
}
# Two bench runs on one machine (several developers) would answer each other's probes: give
# each its own range with BENCH_PORT_SHIFT (added to every port above, e.g. 10000: shifted
# ports stay below the ephemeral range that starts at 32768).
PORTS = {k: v + _SHIFT for k, v in PORTS.items()}
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


def route_yaml(name, hostname, path, filters="", backend_ref="        - name: backend\n          port: 80\n"):
    """One HTTPRoute; `filters` (YAML list items at the rule's filter indent) and
    `backend_ref` (YAML list items) let section 7 put an ExternalAuth filter or an
    InferencePool on a route."""
    if filters:
        filters = "      filters:\n" + filters
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
{filters}      backendRefs:
{backend_ref}"""


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
    return start_weir_args(config_dir, (), debounce=debounce, log=log)


def start_weir_args(config_dir, extra_args, debounce="50ms", log="weir"):
    p = Proc(
        "weir",
        [str(WEIR), "run", "--config-dir", str(config_dir), "--bind", "127.0.0.1",
         "--listener-port-offset", str(PORTS["weir_offset"]),
         "--admin-addr", f"127.0.0.1:{PORTS['weir_admin']}", "--log-level", "warn", "--access-log", "off",
         "--worker-threads", "1", "--debounce", debounce, *extra_args],
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


def wrk(port, hostname, path, conns, duration, https=False, headers=None):
    scheme = "https" if https else "http"
    extra = [a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")]
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
            "--timeout", "5s", "-s", str(HERE / "report.lua"), "-H", f"Host: {hostname}",
            *extra, f"{scheme}://127.0.0.1:{port}{path}"]
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
    # Issue 25's third connection count; left out of section 4's peak, which stays the
    # peak of the four loads it was measured over since 2026-12-01.
    ("h1-512", "HTTP/1.1 keep-alive, 512 conns"),
    ("h2c", "HTTP/2 (h2c), 16 conns x 10 streams"),
    ("https", "HTTPS (TLS 1.3, HTTP/1.1), 16 conns"),
]


def run_mode(mode, ports, hostname, path, duration):
    http_port, h2c_port, https_port = ports
    if mode == "h1-16":
        return wrk(http_port, hostname, path, 16, duration)
    if mode == "h1-128":
        return wrk(http_port, hostname, path, 128, duration)
    if mode == "h1-512":
        return wrk(http_port, hostname, path, 512, duration)
    if mode == "h2c":
        return h2load(h2c_port, hostname, path, 16, 10, duration)
    if mode == "https":
        return wrk(https_port, hostname, path, 16, duration, https=True)
    raise ValueError(mode)


def warm(mode, ports, hostname, path):
    run_mode(mode, ports, hostname, path, WARMUP)


# ---------------------------------------------------------------------------------------
# sections


def cpu_ticks(pids):
    """User and system CPU time of all threads, in clock ticks (/proc/PID/task/*/stat)."""
    user = system = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            user += int(fields[11])
            system += int(fields[12])
    return user, system


TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def rounds(systems, conns_list, note=lambda: "", alternate=False):
    """BENCH_ROUNDS interleaved rounds of section 1's HTTP/1.1 load (route 9 of 10, one
    backend nginx) against each of `systems` ((name, start or None for the bare backend,
    port)): start it, check that the route answers 200 and a miss 404, then at each
    connection count warm up and measure with wrk, adding the proxy's user and system CPU
    time per request (`user_us`, `sys_us`, `cpu_us`; None without a proxy). `note()` adds to each round's load-average line; `alternate`
    reverses every other round's order after the first system, so no build always runs
    first. Returns ({(name, conns): [result per round]}, [round notes])."""
    TMP.mkdir(parents=True, exist_ok=True)
    ensure_cert()
    hostname, path = host(9), f"{prefix(9)}/x"
    backend = start_backend()
    try:
        return _rounds(systems, conns_list, hostname, path, note, alternate)
    finally:
        backend.stop()
        stop_all()


def _rounds(systems, conns_list, hostname, path, note, alternate):
    runs, notes = {}, []
    for round_no in range(ROUNDS):
        load = os.getloadavg()
        notes.append(f"round {round_no + 1}: load average {load[0]:.2f} {load[1]:.2f} "
                     f"{load[2]:.2f}{note()}")
        print(notes[-1], flush=True)
        order = systems
        if alternate and round_no % 2 == 1:
            order = [systems[0]] + systems[:0:-1]
        for name, start, port in order:
            proc = start() if start else None
            try:
                if proc:
                    time.sleep(0.5)
                    ok = http_get(port, hostname, path)
                    miss = http_get(port, hostname, "/nope")
                    if ok != 200 or miss != 404:
                        raise RuntimeError(f"{name}: routing check failed ({ok}, {miss})")
                for conns in conns_list:
                    wrk(port, hostname, path, conns, WARMUP)
                    pids = tree_pids(proxy_root(proc)) if proc else []
                    before = cpu_ticks(pids)
                    r = wrk(port, hostname, path, conns, DURATION)
                    after = cpu_ticks(pids)
                    r["user_us"] = r["sys_us"] = r["cpu_us"] = None
                    if proc:
                        n = max(1, r["requests"])
                        r["user_us"] = (after[0] - before[0]) * TICK_US / n
                        r["sys_us"] = (after[1] - before[1]) * TICK_US / n
                        r["cpu_us"] = r["user_us"] + r["sys_us"]
                    runs.setdefault((name, conns), []).append(r)
                    cpu = (f"  CPU/req {r['user_us']:.1f} user + {r['sys_us']:.1f} sys µs"
                           if proc else "")
                    print(f"  {name:15} {conns:4} {r['rps']:>9.0f} req/s  "
                          f"p99 {r['p99']:.2f} ms{cpu}", flush=True)
            finally:
                if proc:
                    proc.stop()
    return runs, notes


def spread(rs):
    """Rounds of one case (wrk results): the median by req/s, the req/s range, and the
    errors of all rounds."""
    rs = sorted(rs, key=lambda r: r["rps"])
    errors = sum(r["non2xx"] + r["socket_errors"] for r in rs)
    return rs[len(rs) // 2], rs[0]["rps"], rs[-1]["rps"], errors


def publish(lines, default_name):
    """Print a table script's report and write it to BENCH_OUT, else
    bench/results/DEFAULT_NAME."""
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(os.environ.get("BENCH_OUT", str(HERE / "results" / default_name)))
    out.write_text(text)


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
                    sampler = RssSampler(proc.pid) if proc and mode != "h1-512" else None
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
# section 7: policy rows (issues 22, 23, 24). Each case puts one policy on route 9 of 10;
# route 8, in the same weir process, is its no-policy twin, requested with the same path and
# headers. `bench/callgrind.py --case NAME` measures the same pair in instructions.

TESTKIT_BIN = Path(os.environ.get("BENCH_TESTKIT_BIN", str(ROOT / "target" / "release")))
POLICY_ROUTE, TWIN_ROUTE = 9, 8
JWT_ISSUER, JWT_AUDIENCE = "https://bench.test", "bench"
# A limit far above what one core can send: every request is counted and admitted.
RATE_LIMIT_RULE = """      rules:
        - clientSelectors: [{sourceCIDR: {type: Distinct, value: 0.0.0.0/0}}]
          limit: {requests: 1000000000, unit: Second}
"""


def b64url(data):
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True,
                          check=True).stdout


def der_ecdsa_to_jws(sig, size=32):
    """An ECDSA-Sig-Value (DER SEQUENCE of INTEGER r, s), as openssl signs, to JWS's r || s."""
    def read_len(b, i):
        n = b[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        return int.from_bytes(b[i + 1:i + 1 + k], "big"), i + 1 + k

    assert sig[0] == 0x30
    _, i = read_len(sig, 1)
    out = b""
    for _ in range(2):
        assert sig[i] == 0x02
        n, i = read_len(sig, i + 1)
        out += int.from_bytes(sig[i:i + n], "big").to_bytes(size, "big")
        i += n
    return out


# alg -> (openssl genpkey arguments, kid)
JWT_KEYS = {
    "RS256": (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], "bench-rs"),
    "ES256": (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "bench-es"),
    "EdDSA": (["-algorithm", "ED25519"], "bench-ed"),
}


def jwt_key(alg):
    """(private key PEM path, JWK of its public half), generated once with openssl into
    bench/results/tmp/jwt/."""
    genpkey, kid = JWT_KEYS[alg]
    d = TMP / "jwt"
    d.mkdir(parents=True, exist_ok=True)
    pem = d / f"{alg}.pem"
    if not pem.exists():
        openssl("genpkey", *genpkey, "-out", str(pem))
    spki = openssl("pkey", "-in", str(pem), "-pubout", "-outform", "DER")
    jwk = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "RS256":
        modulus = openssl("rsa", "-in", str(pem), "-noout", "-modulus").decode()
        n = bytes.fromhex(modulus.strip().split("=", 1)[1])
        jwk.update(kty="RSA", n=b64url(n), e="AQAB")
    elif alg == "ES256":
        point = spki[-65:]  # 0x04 || x || y
        jwk.update(kty="EC", crv="P-256", x=b64url(point[1:33]), y=b64url(point[33:]))
    else:
        jwk.update(kty="OKP", crv="Ed25519", x=b64url(spki[-32:]))
    return pem, jwk


def jwt_token(alg):
    """A token signed with `jwt_key(alg)`, valid for a day: iss, aud, sub, iat, exp."""
    pem, jwk = jwt_key(alg)
    now = int(time.time())
    header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": jwk["kid"]}).encode())
    claims = b64url(json.dumps({"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench-user",
                                "iat": now, "exp": now + 86400}).encode())
    signing_input = f"{header}.{claims}".encode()
    if alg == "EdDSA":
        msg = TMP / "jwt" / "signing-input"
        msg.write_bytes(signing_input)
        sig = openssl("pkeyutl", "-sign", "-rawin", "-inkey", str(pem), "-in", str(msg))
    else:
        sig = openssl("dgst", "-sha256", "-sign", str(pem), data=signing_input)
        if alg == "ES256":
            sig = der_ecdsa_to_jws(sig)
    return f"{header}.{claims}.{b64url(sig)}"


BENCH_PASSWORD = "bench-password"


def htpasswd_line(scheme):
    """`bench:<hash of BENCH_PASSWORD>` as `htpasswd -s` (SHA) or `htpasswd -B` (bcrypt,
    cost 10) writes it; None when this Python cannot make a bcrypt hash."""
    import base64
    import hashlib

    if scheme == "sha":
        return "bench:{SHA}" + base64.b64encode(hashlib.sha1(BENCH_PASSWORD.encode()).digest()).decode()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # the system's crypt(3); bcrypt via libxcrypt
        h = crypt.crypt(BENCH_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))
    except (ImportError, AttributeError, OSError):
        return None
    return f"bench:{h}" if h and h.startswith("$2") else None


def basic_header():
    import base64

    return "Basic " + base64.b64encode(f"bench:{BENCH_PASSWORD}".encode()).decode()


def btp_yaml(spec):
    return f"""apiVersion: gateway.weir.dev/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: bench-case
  namespace: default
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
      name: r-{POLICY_ROUTE}
{spec}"""


def security_yaml(spec, before=""):
    return before + f"""apiVersion: gateway.weir.dev/v1alpha1
kind: SecurityPolicy
metadata:
  name: bench-case
  namespace: default
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
      name: r-{POLICY_ROUTE}
{spec}"""


def service_yaml(name, port, target, app_protocol=None):
    """A Service and its EndpointSlice on 127.0.0.1:target."""
    ap = f"\n      appProtocol: {app_protocol}" if app_protocol else ""
    ap_slice = f"\n    appProtocol: {app_protocol}" if app_protocol else ""
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  ports:
    - port: {port}
      targetPort: {target}{ap}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-local
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
  - port: {target}
    protocol: TCP{ap_slice}
endpoints:
  - addresses: ["127.0.0.1"]
    conditions:
      ready: true
"""


def ext_auth_filter(protocol):
    if protocol == "HTTP":
        return """        - type: ExternalAuth
          externalAuth:
            protocol: HTTP
            backendRef: {name: ext-auth-http, port: 9000}
            http:
              path: /verify
              allowedResponseHeaders: [x-current-user]
"""
    return """        - type: ExternalAuth
          externalAuth:
            protocol: GRPC
            backendRef: {name: ext-auth-grpc, port: 9001}
"""


def inference_yaml():
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: bench-model-0
  namespace: default
  labels: {{app: bench-model}}
status:
  phase: Running
  podIP: 127.0.0.1
  conditions: [{{type: Ready, status: "True"}}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: bench-pool
  namespace: default
spec:
  selector:
    matchLabels: {{app: bench-model}}
  targetPorts:
    - number: {PORTS["backend_http"]}
  endpointPickerRef:
    name: bench-epp
    port: {{number: 9002}}
---
""" + service_yaml("bench-epp", 9002, PORTS["epp"], "http2")


class PolicyCase:
    """One row of section 7: what to write next to the 10 routes (`files`: name -> text;
    `route9`: route 9's filters / backendRefs), the helper processes it needs, the request
    (path under the route's prefix, headers), the object that must be Accepted on /status,
    and `applied(status, headers)` -> None or why route 9's answer shows no policy."""

    def __init__(self, name, issue, label, files=None, route9=None, procs=(), weir_args=(),
                 path="/x", headers=None, accepted=None, applied=None, note=""):
        self.name, self.issue, self.label = name, issue, label
        self.files = files or (lambda: {})
        self.route9 = route9 or {}
        self.procs, self.weir_args = procs, weir_args
        self.path, self.headers = path, headers or (lambda: {})
        self.accepted, self.applied, self.note = accepted, applied, note


def _hdr(name, want=None):
    def check(status, headers):
        v = headers.get(name)
        if status != 200 or v is None or (want is not None and want not in v):
            return f"status {status}, {name}: {v!r} (want {want or 'present'})"
        return None
    return check


def _no_hdr(name):
    """Route 9 answers 200 without `name` (a policy that removes what another adds); route 8
    looks the same, so only the Accepted conditions tell the two apart."""
    def check(status, headers):
        if status != 200 or name in headers:
            return f"status {status}, {name}: {headers.get(name)!r} (want absent)"
        return None
    check.same_on_twin = True
    return check


def _refuses_without(header):
    """Route 9 refuses a request without `header` (401) and admits one with it."""
    def check(status, headers, unauth_status=None):
        if status != 200:
            return f"status {status} with credentials"
        if unauth_status is not None and unauth_status == 200:
            return f"route 9 answers 200 without {header}: the policy is not applied"
        return None
    check.without = header
    return check


def _jwt_case(alg):
    return PolicyCase(
        f"jwt-{alg.lower()}", 23, f"JWT {alg} (local JWKS, key cached)",
        files=lambda: {"case.yaml": security_yaml(f"""  jwt:
    providers:
      - name: bench
        issuer: {JWT_ISSUER}
        audiences: [{JWT_AUDIENCE}]
        localJWKS:
          type: Inline
          inline: '{json.dumps({"keys": [jwt_key(alg)[1]]})}'
""")},
        headers=lambda: {"Authorization": f"Bearer {jwt_token(alg)}"},
        accepted=("SecurityPolicy", "bench-case"),
        applied=_refuses_without("Authorization"))


def _basic_case(scheme):
    def files():
        line = htpasswd_line(scheme)
        if line is None:
            raise SkipCase("no bcrypt: Python's crypt module cannot make a $2b$ hash here")
        return {"case.yaml": security_yaml("""  basicAuth:
    users: {name: bench-users}
""", before=f"""apiVersion: v1
kind: Secret
metadata:
  name: bench-users
  namespace: default
stringData:
  .htpasswd: '{line}'
---
""")}
    return PolicyCase(
        f"basic-{scheme}", 23,
        "basic auth, htpasswd {SHA}" if scheme == "sha"
        else "basic auth, htpasswd bcrypt cost 10 (verification cached)",
        files=files, headers=lambda: {"Authorization": basic_header()},
        accepted=("SecurityPolicy", "bench-case"), applied=_refuses_without("Authorization"))


def _ext_auth_case(protocol):
    key = "ext_auth_http" if protocol == "HTTP" else "ext_auth_grpc"
    svc = ("ext-auth-http", 9000) if protocol == "HTTP" else ("ext-auth-grpc", 9001)
    return PolicyCase(
        f"extauth-{protocol.lower()}", 23,
        f"ext auth {protocol} (HTTPRoute ExternalAuth filter, weir-test-auth)",
        files=lambda: {"case.yaml": service_yaml(svc[0], svc[1], PORTS[key])},
        route9={"filters": ext_auth_filter(protocol)},
        procs=(("ext-auth", lambda: start_test_auth(protocol.lower(), PORTS[key])),),
        headers=lambda: {"Authorization": "Bearer allow"},
        accepted=("HTTPRoute", f"r-{POLICY_ROUTE}"), applied=_refuses_without("Authorization"))


class SkipCase(Exception):
    pass


POLICY_CASES = [
    PolicyCase(
        "ratelimit-local", 22, "rate limit, local (not reached)",
        files=lambda: {"case.yaml": btp_yaml("  rateLimit:\n    local:\n" + RATE_LIMIT_RULE)},
        accepted=("BackendTrafficPolicy", "bench-case"), applied=_hdr("x-ratelimit-limit")),
    PolicyCase(
        "ratelimit-local-noheaders", 22,
        "rate limit, local (not reached), ClientTrafficPolicy disableRateLimitHeaders",
        files=lambda: {
            "case.yaml": btp_yaml("  rateLimit:\n    local:\n" + RATE_LIMIT_RULE),
            "ctp.yaml": """apiVersion: gateway.weir.dev/v1alpha1
kind: ClientTrafficPolicy
metadata:
  name: bench-quiet
  namespace: default
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: Gateway
      name: bench
  headers:
    disableRateLimitHeaders: true
"""},
        accepted=[("BackendTrafficPolicy", "bench-case"), ("ClientTrafficPolicy", "bench-quiet")],
        applied=_no_hdr("x-ratelimit-limit")),
    PolicyCase(
        "ratelimit-global", 22, "rate limit, global (Redis on loopback, not reached)",
        files=lambda: {"case.yaml": btp_yaml("  rateLimit:\n    global:\n" + RATE_LIMIT_RULE)},
        procs=(("redis", lambda: start_redis(PORTS["redis"])),),
        weir_args=("--rate-limit-redis", f"redis://127.0.0.1:{PORTS['redis']}"),
        accepted=("BackendTrafficPolicy", "bench-case"), applied=_hdr("x-ratelimit-limit")),
    PolicyCase(
        "gzip", 22, "gzip, 10 KB text/plain body (client accepts gzip)",
        files=lambda: {"case.yaml": btp_yaml("  compression:\n    - type: Gzip\n")},
        path="/body10k", headers=lambda: {"Accept-Encoding": "gzip"},
        accepted=("BackendTrafficPolicy", "bench-case"), applied=_hdr("content-encoding", "gzip")),
    PolicyCase(
        "cache-hit", 22, "response cache, hit (backend: Cache-Control max-age=3600)",
        files=lambda: {"case.yaml": btp_yaml(
            "  responseCache: {maxSize: 8Mi, maxEntrySize: 256Ki}\n")},
        path="/cached",
        accepted=("BackendTrafficPolicy", "bench-case"), applied=_hdr("cache-status", "hit")),
    _jwt_case("RS256"),
    _jwt_case("ES256"),
    _jwt_case("EdDSA"),
    _basic_case("sha"),
    _basic_case("bcrypt"),
    _ext_auth_case("HTTP"),
    _ext_auth_case("GRPC"),
    PolicyCase(
        "inference", 24, "InferencePool + test picker (weir-test-epp) vs a plain Service",
        files=lambda: {"case.yaml": inference_yaml()},
        route9={"backend_ref": "        - group: inference.networking.k8s.io\n"
                               "          kind: InferencePool\n          name: bench-pool\n"},
        procs=(("epp", lambda: start_test_epp(PORTS["epp"])),),
        accepted=[("HTTPRoute", f"r-{POLICY_ROUTE}"), ("InferencePool", "bench-pool")],
        applied=_hdr("x-went-into-resp-headers", "true")),
]
CASES_BY_NAME = {c.name: c for c in POLICY_CASES}


def policy_case_config(case):
    """A config dir for `case`: the 10 routes of `weir_config(10)`, route 9 changed as the
    case says, and the case's files. Rewritten each time (tokens are signed now)."""
    d = TMP / f"weir-10-case-{case.name}"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(weir_config(10), d)
    (d / ".complete").unlink()
    if case.route9:
        docs = [route_yaml(f"r-{i}", host(i), prefix(i),
                           **(case.route9 if i == POLICY_ROUTE else {}))
                for i in range(10)]
        (d / "routes-0000.yaml").write_text("---\n".join(docs))
    for name, text in case.files().items():
        (d / name).write_text(text)
    static = TMP / "static"
    static.mkdir(exist_ok=True)
    body = static / "body10k.txt"
    if not body.exists():
        # Text that compresses as logs or JSON do (~5x), not a run of one byte.
        lines, k = [], 0
        while sum(len(x) for x in lines) < 10240:
            lines.append(f"{k:05d} GET /api/v1/items/{(k * 7919) % 100000} 200 "
                         f"{(k * 104729) % 5000} bytes in {(k * 31) % 97} ms\n")
            k += 1
        body.write_text("".join(lines)[:10240])
    return d


def start_redis(port):
    p = Proc("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--protected-mode", "no"], cpu=BACKEND_CPU)
    wait_port(port, proc=p)
    return p


def testkit_bin(name):
    path = TESTKIT_BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: cargo build --release --bins "
                           f"(or BENCH_TESTKIT_BIN=DIR)")
    return str(path)


def start_test_auth(protocol, port):
    argv = [testkit_bin("weir-test-auth"), "--protocol", protocol, "--port", str(port)]
    if os.environ.get("BENCH_TEST_AUTH_QUIET", "1") == "1":
        argv.append("--quiet")
    p = Proc(f"ext-auth-{protocol}", argv, cpu=BACKEND_CPU)
    wait_port(port, proc=p)
    return p


def start_test_epp(port):
    p = Proc("epp", [testkit_bin("weir-test-epp"), "--port", str(port), "--endpoints",
                     f"127.0.0.1:{PORTS['backend_http']}"], cpu=BACKEND_CPU)
    wait_port(port, proc=p)
    return p


def http_req(port, hostname, path, headers=None, timeout=5.0):
    """(status, {lowercase header: value}) of one GET over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": hostname, **(headers or {})})
        r = conn.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    except OSError:
        return None, {}
    finally:
        conn.close()


def check_accepted(kind, name):
    """Raise unless /status has `kind`/`name` with every Accepted and ResolvedRefs condition
    True (ancestors or parents); returns the conditions as text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['weir_admin']}/status", timeout=10) as r:
        items = json.load(r)["items"]
    found = [i for i in items if i.get("kind") == kind
             and i.get("metadata", {}).get("name") == name
             and i.get("metadata", {}).get("namespace", "default") == "default"]
    if not found:
        raise RuntimeError(f"{kind} {name} missing from /status")
    status = found[0].get("status") or {}
    conditions = [c for a in status.get("ancestors", []) + status.get("parents", [])
                  for c in a.get("conditions", [])]
    key = [c for c in conditions if c.get("type") in ("Accepted", "ResolvedRefs")]
    if not any(c.get("type") == "Accepted" for c in key) or any(
            c.get("status") != "True" for c in key):
        raise RuntimeError(f"{kind} {name} not Accepted: {json.dumps(status)}")
    return [f"{c['type']}={c['status']}" for c in key]


def check_case(case, headers, port=None):
    """Raise unless the case's object is Accepted and route 9 answers with the policy's
    effect (twice: a cache fills on the first) while route 8 answers 200 without it."""
    port = port or WEIR_HTTP
    objects = case.accepted if isinstance(case.accepted, list) else [case.accepted]
    conds = [f"{kind} {c}" for kind, name in filter(None, objects)
             for c in check_accepted(kind, name)]
    path9 = prefix(POLICY_ROUTE) + case.path
    path8 = prefix(TWIN_ROUTE) + case.path
    deadline = time.time() + 20
    why = "not checked"
    while time.time() < deadline:
        http_req(port, host(POLICY_ROUTE), path9, headers)
        status, hdrs = http_req(port, host(POLICY_ROUTE), path9, headers)
        why = case.applied(status, hdrs) if case.applied else (
            None if status == 200 else f"status {status}")
        without = getattr(case.applied, "without", None)
        if why is None and without:
            bare = {k: v for k, v in headers.items() if k != without}
            unauth, _ = http_req(port, host(POLICY_ROUTE), path9, bare)
            if unauth == 200:
                why = f"route 9 answers 200 without {without}: the policy is not applied"
        if why is None:
            break
        time.sleep(0.2)
    if why is not None:
        raise RuntimeError(f"{case.name}: the policy does not show on route 9: {why}")
    twin, hdrs8 = http_req(port, host(TWIN_ROUTE), path8, headers)
    if twin != 200:
        raise RuntimeError(f"{case.name}: route 8 (no policy) answers {twin}")
    if case.applied and getattr(case.applied, "without", None) is None \
            and not getattr(case.applied, "same_on_twin", False) \
            and case.applied(twin, hdrs8) is None:
        raise RuntimeError(f"{case.name}: route 8 shows the policy too")
    return conds


def redis_rtt(port, n=2000):
    """Round-trip time of PING to the Redis on `port`: from Python over one connection
    (p50, p99 in ms), and redis-benchmark's own p50 (-c 1, no pipelining), pinned as wrk is."""
    out = {}
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(b"PING\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += s.recv(64)
        lat.append((time.perf_counter() - t0) * 1000)
    s.close()
    out["python_p50"], out["python_p99"] = pctl(lat, 0.5), pctl(lat, 0.99)
    if shutil.which("redis-benchmark"):
        r = subprocess.run(["taskset", "-c", LOAD_CPU, "redis-benchmark", "-p", str(port),
                            "-t", "ping", "-n", "20000", "-c", "1", "-P", "1", "--csv",
                            "--precision", "3"], capture_output=True, text=True, timeout=120)
        for line in r.stdout.splitlines():
            cols = [c.strip('"') for c in line.split(",")]
            if cols and cols[0].startswith("PING_MBULK"):
                try:
                    out["bench_p50"] = float(cols[4])
                except (IndexError, ValueError):
                    pass
    return out


def picker_rtt(port, n=2000):
    """The test picker's own round trip, measured in the same run: `weir-test-epp --probe`
    makes N exchanges one at a time over one gRPC connection, as Weir makes them for one
    request through the pool (request headers -> headers response; response headers ->
    answer), pinned as wrk is. {p50, p99, request_p50, response_p50} in ms."""
    r = subprocess.run(["taskset", "-c", LOAD_CPU, testkit_bin("weir-test-epp"), "--probe",
                        f"127.0.0.1:{port}", "--requests", str(n)],
                       capture_output=True, text=True, timeout=300)
    words = r.stdout.split()
    out = {}
    for key, name in (("p50", "p50_ms"), ("p99", "p99_ms"),
                      ("request_p50", "request_step_p50_ms"),
                      ("response_p50", "response_step_p50_ms")):
        if name in words:
            try:
                out[key] = float(words[words.index(name) + 1])
            except (IndexError, ValueError):
                pass
    return out


def wrk_case(port, hostname, path, conns, duration, headers):
    return wrk(port, hostname, path, conns, duration, headers=headers)


def section_policy_rows(report, only=None):
    """Section 7: for each case, one weir process (plus the case's helpers); route 8 (no
    policy) and route 9 (the case's policy) alternate for ROUNDS rounds; each run is wrk
    HTTP/1.1 16 connections (throughput, p50/p99 under load) then 1 connection (the latency
    one request adds, without queueing)."""
    cases = [c for c in POLICY_CASES if not only or c.name in only]
    rows, skipped, redis, picker = [], [], {}, {}
    lat_duration = max(2, DURATION // 2)
    for case in cases:
        procs = []
        try:
            try:
                config_dir = policy_case_config(case)
            except SkipCase as e:
                skipped.append((case, str(e)))
                print(f"  {case.name}: skipped ({e})", flush=True)
                continue
            for _, start in case.procs:
                procs.append(start())
            headers = case.headers()
            proc = start_weir_args(config_dir, case.weir_args, log=f"weir-case-{case.name}")
            procs.append(proc)
            conds = check_case(case, headers)
            print(f"  {case.name}: {', '.join(conds) or 'no status object'}; applied", flush=True)
            if case.name == "ratelimit-global":
                redis = redis_rtt(PORTS["redis"])
            if case.name == "inference":
                picker = picker_rtt(PORTS["epp"])
            runs = {}
            for _ in range(ROUNDS):
                for side, i in (("twin", TWIN_ROUTE), ("policy", POLICY_ROUTE)):
                    path = prefix(i) + case.path
                    wrk_case(WEIR_HTTP, host(i), path, 16, WARMUP, headers)
                    r = wrk_case(WEIR_HTTP, host(i), path, 16, DURATION, headers)
                    r1 = wrk_case(WEIR_HTTP, host(i), path, 1, lat_duration, headers)
                    r["p50_1"], r["p99_1"] = r1["p50"], r1["p99"]
                    r["non2xx"] += r1["non2xx"]
                    r["socket_errors"] += r1["socket_errors"]
                    runs.setdefault(side, []).append(r)
                    print(f"  {case.name:16} {side:6} {r['rps']:>9.0f} req/s  p50 "
                          f"{r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  1-conn p50 "
                          f"{r['p50_1']:.3f} ms", flush=True)
            rows.append((case, runs))
        finally:
            for p in reversed(procs):
                p.stop()

    def median(rs):
        return sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    lines = [f"## 7. Policy rows (issues 22, 23, 24): route 9 with the policy beside route 8 "
             f"without it, in the same weir process (HTTP/1.1 keep-alive; median of {ROUNDS} "
             f"alternating rounds)", "",
             "req/s, p50 and p99 under load: wrk 16 connections. 1-conn p50: wrk 1 connection, "
             "one request at a time (what the policy adds to one request's latency, without "
             "queueing). Δ: policy minus no policy. Instructions per request: "
             "`python3 bench/callgrind.py --case NAME`.", "",
             "| issue | case | route | req/s | p50 ms | p99 ms | × no policy | 1-conn p50 ms | "
             "Δ 1-conn p50 µs | errors |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    results = {}
    for case, runs in rows:
        t, p = median(runs["twin"]), median(runs["policy"])
        t50, p50 = med(runs["twin"], "p50_1"), med(runs["policy"], "p50_1")
        err_t = sum(r["non2xx"] + r["socket_errors"] for r in runs["twin"])
        err_p = sum(r["non2xx"] + r["socket_errors"] for r in runs["policy"])
        rng = ""
        for side, r, rs, x50, err, label in (
                ("twin", t, runs["twin"], t50, err_t, "no policy (route 8)"),
                ("policy", p, runs["policy"], p50, err_p, case.label)):
            lo, hi = min(x["rps"] for x in rs), max(x["rps"] for x in rs)
            rng = f" [{lo:.0f}–{hi:.0f}]" if len(rs) > 1 else ""
            ratio = f"{r['rps'] / t['rps']:.3f}" if side == "policy" else "1"
            delta = f"{(p50 - t50) * 1000:+.0f}" if side == "policy" else ""
            lines.append(f"| {case.issue} | `{case.name}` | {label} | {r['rps']:.0f}{rng} | "
                         f"{fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} | {ratio} | {x50:.3f} | "
                         f"{delta} | {err} |")
        results[case.name] = {"twin": t, "policy": p, "twin_p50_1": t50, "policy_p50_1": p50}
    for case, why in skipped:
        lines.append(f"| {case.issue} | `{case.name}` | {case.label} | skipped: {why} | | | | | | |")
    if redis:
        lines += ["", f"Redis round trip (PING, one connection, same run): redis-benchmark "
                      f"`-c 1 -P 1` p50 {redis.get('bench_p50', float('nan')):.3f} ms; from "
                      f"Python p50 {redis['python_p50']:.3f} ms, p99 {redis['python_p99']:.3f} ms."]
        g = results.get("ratelimit-global")
        if g:
            added = g["policy_p50_1"] - g["twin_p50_1"]
            verdicts = []
            for what, key in (("redis-benchmark's", "bench_p50"), ("Python's", "python_p50")):
                if key in redis:
                    rtt = redis[key]
                    verdicts.append(f"{what} {rtt * 1000:.0f} µs: "
                                    f"{'met' if added < rtt else 'MISSED'}")
            lines.append(f"Global limit: the 1-conn p50 grows by {added * 1000:+.0f} µs; "
                         f"target (less than one Redis round trip) against "
                         f"{'; against '.join(verdicts)}.")
    inf = results.get("inference")
    if picker and inf:
        added = (inf["policy_p50_1"] - inf["twin_p50_1"]) * 1000
        lines += ["", f"Picker round trip (`weir-test-epp --probe`, one gRPC connection, the "
                      f"two exchanges Weir makes per request, same run): p50 "
                      f"{picker.get('p50', float('nan')) * 1000:.0f} µs (request step "
                      f"{picker.get('request_p50', float('nan')) * 1000:.0f} µs, response step "
                      f"{picker.get('response_p50', float('nan')) * 1000:.0f} µs), p99 "
                      f"{picker.get('p99', float('nan')) * 1000:.0f} µs. Pool minus plain "
                      f"Service, 1-conn p50: {added:+.0f} µs; minus the picker round trip: "
                      f"{added - picker.get('p50', float('nan')) * 1000:+.0f} µs (what Weir "
                      f"adds beyond the picker)."]
    lines += ["", "Targets: `ratelimit-local` < 5 % per request; `cache-hit` faster than "
              "the backend (× > 1); `ratelimit-global` adds less than one Redis round trip "
              "at p50; `jwt-*` < 20 % per request. The per-request cost is the "
              "instruction ratio of `callgrind.py --case`; req/s ratios on a shared machine "
              "move by several percent between runs."]
    report.extend(lines + [""])
    return results, redis


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
        f"- weir: `{git}{' + uncommitted changes' if dirty else ''}`, "
        f"{'release build' if 'BENCH_WEIR' not in os.environ else f'binary {WEIR}'}, "
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
    if 7 in SECTIONS and not shutil.which("redis-server"):
        sys.exit("redis-server is missing (section 7's global rate limit): run bench/run.sh "
                 "(installs it) or apt-get install redis-server")
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
        if 7 in SECTIONS:
            print("7. policy rows", flush=True)
            watch.section = "7"
            only = [c for c in os.environ.get("BENCH_CASES", "").split(",") if c]
            unknown = [c for c in only if c not in CASES_BY_NAME]
            if unknown:
                sys.exit(f"BENCH_CASES: unknown {unknown}; cases: {', '.join(CASES_BY_NAME)}")
            section_policy_rows(report, only)
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
