#!/usr/bin/env python3
"""One-connection round trips to a fresh redis-server: PING, and EVALSHA of Weir's global
rate-limit script with one rule (admitting: the INCR path), from Python and redis-benchmark."""
import socket, subprocess, sys, time, statistics, shutil
port = int(sys.argv[1]); script = open(sys.argv[2]).read()
srv = subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--protected-mode", "no"], stdout=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port)); break
        except OSError:
            time.sleep(0.05)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def cmd(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        return out
    def call(raw, end):
        s.sendall(raw); buf = b""
        while not end(buf):
            buf += s.recv(4096)
        return buf
    line = lambda b: b.endswith(b"\r\n")
    sha = call(cmd("SCRIPT", "LOAD", script), line).split(b"\r\n")[1].decode()
    key = "weir:rl:{0000000000000001:0000000000000002}:"
    evalsha = cmd("EVALSHA", sha, 1, key, 1000000000, 1000)
    four = lambda b: b.count(b"\r\n") >= 5
    res = {}
    for name, raw, end in (("PING", cmd("PING"), line), ("EVALSHA", evalsha, four)):
        for _ in range(500): call(raw, end)
        lat = []
        for _ in range(5000):
            t0 = time.perf_counter(); call(raw, end); lat.append((time.perf_counter() - t0) * 1e6)
        lat.sort()
        res[name] = (lat[len(lat)//2], lat[int(len(lat)*0.99)])
        print(f"python {name}: p50 {res[name][0]:.1f} us, p99 {res[name][1]:.1f} us")
    for name, args in (("PING", ["-t", "ping"]), ("EVALSHA", ["EVALSHA", sha, "1", key, "1000000000", "1000"])):
        r = subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-n", "20000", "-c", "1",
                            "-P", "1", "--csv", "--precision", "3"] + args, capture_output=True, text=True)
        rows = [l for l in r.stdout.splitlines() if l and not l.startswith('"test"')]
        print(f"redis-benchmark {name}: {rows[:2]}")
    print(call(cmd("INFO", "commandstats"), lambda b: b.endswith(b"\r\n") and b.count(b"\r\n") > 3).decode(errors="replace")[:2000])
finally:
    srv.terminate(); srv.wait()
