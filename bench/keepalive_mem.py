#!/usr/bin/env python3
"""Memory per idle keep-alive client connection, and whether it is returned after a spike.

Starts target/release/weir (file mode, 10 routes, the bench backend) — or, with
`--proxy nginx`, the reference nginx of `make bench` — opens connections in steps (default
1,000 / 5,000 / 10,000), each of which sends one request and reads the 200, and keeps them
all open and idle. It prints the process's RSS (VmRSS) before, at each step, and after all
of them are closed, twice (the second spike shows whether memory is reused rather than
grown). Usage:

    python3 bench/keepalive_mem.py [--steps 1000,5000,10000] [--tls | --h2c] [--proxy nginx]
        [--threads N] [--rounds 2] [-- EXTRA WEIR ARGS]

Needs `ulimit -n` above the largest step (the script holds one descriptor per connection).
"""

import argparse
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

HOST = run.host(9)
PATH = run.prefix(9) + "/x"


def read_response(s, buf=b""):
    """Read one HTTP/1.1 response with Content-Length; return (status, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    return status, rest[length:]


REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: keepalive-mem\r\n\r\n".encode()


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_literal(index, value):
    v = value.encode()
    return bytes([index]) + bytes([len(v)]) + v  # literal without indexing, indexed name


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"")
# :method GET (2), :scheme http (6), :authority, :path: one stream, END_STREAM|END_HEADERS.
H2_HEADERS = bytes([0x82, 0x86]) + h2_literal(1, HOST) + h2_literal(4, PATH)


def h2_request(s, stream):
    s.sendall(h2_frame(1, 0x5, stream, H2_HEADERS))
    # Read frames until the stream ends (DATA or HEADERS with END_STREAM).
    status = None
    buf = b""
    while True:
        while len(buf) < 9:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("h2: closed")
            buf += chunk
        length = int.from_bytes(buf[:3], "big")
        kind, flags = buf[3], buf[4]
        sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        while len(buf) < 9 + length:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("h2: closed")
            buf += chunk
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if kind == 4 and not flags & 1:  # SETTINGS: ack it
            s.sendall(h2_frame(4, 1, 0, b""))
        if kind == 1 and sid == stream:
            status = 200 if payload[:1] == b"\x88" else payload[:1]
        if kind == 7:
            raise ConnectionError("h2: GOAWAY")
        if sid == stream and kind in (0, 1) and flags & 1:
            return status


class Client:
    def __init__(self, mode, port, ctx):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.s = ctx.wrap_socket(raw, server_hostname=HOST) if mode == "tls" else raw
        self.mode = mode
        self.stream = 1
        self.buf = b""
        if mode == "h2c":
            self.s.sendall(H2_PREFACE)

    def request(self):
        if self.mode == "h2c":
            status = h2_request(self.s, self.stream)
            self.stream += 2
            return status
        self.s.sendall(REQUEST)
        status, self.buf = read_response(self.s, self.buf)
        return status

    def close(self):
        self.s.close()


def rss_kb(pid):
    return run.status_kb(pid, "VmRSS")


def settle(pid, seconds=2.0):
    """RSS once it has stopped moving (or after `seconds`)."""
    last = rss_kb(pid)
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.25)
        now = rss_kb(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


def hook(cmd, pid, phase):
    if cmd:
        subprocess.run(cmd, shell=True, check=False, env={**os.environ, "PID": str(pid), "PHASE": phase})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="1000,5000,10000")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--h2c", action="store_true")
    ap.add_argument("--proxy", choices=["weir", "nginx"], default="weir")
    ap.add_argument("--threads", type=int, default=0, help="weir --worker-threads (0: default)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--after-wait", type=float, default=5.0,
                    help="seconds to wait after closing before reading RSS")
    ap.add_argument("--port-base", type=int, default=0,
                    help="add to every bench port (to run next to another bench)")
    ap.add_argument("--hook", help="shell command run at the baseline and with all connections "
                    "open, with $PID and $PHASE (base, fullN, closedN) set (e.g. a massif snapshot via vgdb)")
    ap.add_argument("--weir", default=str(run.WEIR), help="the weir binary")
    ap.add_argument("extra", nargs="*", help="more weir arguments")
    args = ap.parse_args()
    mode = "tls" if args.tls else "h2c" if args.h2c else "plain"
    steps = [int(x) for x in args.steps.split(",")]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(steps) + 1000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if args.port_base:
        # Generated configs name the backend's port: keep them apart from the default ones.
        run.TMP = run.TMP / f"ports+{args.port_base}"
    for k in run.PORTS:
        run.PORTS[k] += args.port_base
    run.WEIR_HTTP = run.PORTS["weir_offset"] + 80
    run.WEIR_HTTPS = run.PORTS["weir_offset"] + 443

    run.TMP.mkdir(parents=True, exist_ok=True)
    run.ensure_cert()
    backend = run.start_backend()
    if args.proxy == "weir":
        d = run.weir_config(10)
        argv = [args.weir, "run", "--config-dir", str(d), "--bind", "127.0.0.1",
                "--listener-port-offset", str(run.PORTS["weir_offset"]),
                "--admin-addr", f"127.0.0.1:{run.PORTS['weir_admin']}", "--log-level", "warn",
                "--max-connections", str(max(steps) + 1000)]
        if args.threads:
            argv += ["--worker-threads", str(args.threads)]
        argv += args.extra
        p = run.Proc("weir-mem", argv)
        deadline = time.time() + 60
        while run.http_get(run.PORTS["weir_admin"], "localhost", "/readyz") != 200:
            if time.time() > deadline or not p.alive():
                raise RuntimeError(f"weir not ready; see {p.log_path}")
            time.sleep(0.1)
        port = run.WEIR_HTTPS if mode == "tls" else run.WEIR_HTTP
    else:
        (run.TMP / "nginx-tmp").mkdir(exist_ok=True)
        conf = run.nginx_config(10)
        text = conf.read_text().replace("worker_connections 8192", "worker_connections 16384")
        text = text.replace("worker_rlimit_nofile 16384", "worker_rlimit_nofile 20000")
        conf.write_text(text)
        p = run.Proc("nginx-mem", ["nginx", "-p", str(run.TMP), "-c", str(conf),
                                   "-g", "master_process off;"])
        port = {"plain": run.PORTS["nginx_http"], "h2c": run.PORTS["nginx_h2c"],
                "tls": run.PORTS["nginx_https"]}[mode]
        run.wait_port(port, proc=p)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        # Warm up: the first requests allocate the pools, metric series and so on.
        for _ in range(20):
            c = Client(mode, port, ctx)
            for _ in range(5):
                assert c.request() == 200
            c.close()
        base = settle(p.pid)
        hook(args.hook, p.pid, "base")
        print(f"{args.proxy} {mode}: baseline {base / 1024:.1f} MB")
        print(f"| round | connections | RSS MB | KB per connection over baseline |")
        print("| --- | ---: | ---: | ---: |")
        for rnd in range(1, args.rounds + 1):
            clients = []
            t0 = time.time()
            for n in steps:
                while len(clients) < n:
                    c = Client(mode, port, ctx)
                    status = c.request()
                    if status != 200:
                        raise RuntimeError(f"connection {len(clients)}: status {status}")
                    clients.append(c)
                rss = settle(p.pid)
                print(f"| {rnd} | {n} | {rss / 1024:.1f} | {(rss - base) / n:.2f} |", flush=True)
            opened = time.time() - t0
            hook(args.hook, p.pid, f"full{rnd}")
            # A sample still answers after all are open.
            # (hyper closes a connection that waited 30 s for its next request: a slow run
            # sees the oldest ones closed here.)
            failed = 0
            for c in clients[:: max(1, len(clients) // 100)]:
                try:
                    ok = c.request() == 200
                except (OSError, ConnectionError):
                    ok = False
                failed += not ok
            if failed:
                print(f"| {rnd} | {failed} of 100 sampled connections no longer answered | | |")
            rss = settle(p.pid)
            print(f"| {rnd} | {len(clients)} after a second request on 1% | {rss / 1024:.1f} | "
                  f"{(rss - base) / len(clients):.2f} |")
            for c in clients:
                c.close()
            clients = []
            time.sleep(args.after_wait)
            rss = settle(p.pid)
            print(f"| {rnd} | 0 (all closed, {args.after_wait:g} s later) | {rss / 1024:.1f} | "
                  f"({(rss - base) / 1024:+.1f} MB over baseline; opened in {opened:.1f} s) |",
                  flush=True)
            if args.hook:
                hook(args.hook, p.pid, f"closed{rnd}")
                rss = settle(p.pid, args.after_wait)
                print(f"| {rnd} | 0 (after the hook) | {rss / 1024:.1f} | "
                      f"({(rss - base) / 1024:+.1f} MB over baseline) |", flush=True)
    finally:
        p.stop()
        backend.stop()


if __name__ == "__main__":
    main()
