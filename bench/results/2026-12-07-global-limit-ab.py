#!/usr/bin/env python3
"""A/B of the global rate limit's latency (issue 22): bench section 7's `ratelimit-global`
case (route 8 without a policy, route 9 with the global limit, one weir process, a fresh
redis-server, Redis PING measured in the same run), run for binary A then B, alternating
the order each round, so a slow spell of the shared machine hits both alike. Prints, per
binary, the 1-connection p50 of route 8 and 9, their difference (Δ) and the PING round
trip of each run, as medians [ranges].

    BENCH_PORT_SHIFT=12000 BENCH_ROUNDS=1 BENCH_DURATION=6 \\
      python3 bench/results/2026-12-07-global-limit-ab.py ROUNDS NAME=WEIR NAME=WEIR ...
"""
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import run  # noqa: E402


def main():
    rounds = int(sys.argv[1])
    bins = [a.split("=", 1) for a in sys.argv[2:]]
    run.TMP.mkdir(parents=True, exist_ok=True)
    run.ensure_cert()
    runs = {name: [] for name, _ in bins}
    run.start_backend()
    try:
        for r in range(rounds):
            order = bins if r % 2 == 0 else list(reversed(bins))
            for name, path in order:
                run.WEIR = Path(path)
                results, redis = run.section_policy_rows([], ["ratelimit-global"])
                g = results["ratelimit-global"]
                rec = {"twin": g["twin_p50_1"] * 1000, "policy": g["policy_p50_1"] * 1000,
                       "ping_py": redis.get("python_p50", float("nan")) * 1000,
                       "ping_rb": redis.get("bench_p50", float("nan")) * 1000}
                rec["delta"] = rec["policy"] - rec["twin"]
                runs[name].append(rec)
                print(f"round {r} {name}: {json.dumps(rec)}", flush=True)
    finally:
        run.stop_all()

    def m(xs):
        return f"{statistics.median(xs):.0f} [{min(xs):.0f}–{max(xs):.0f}]"

    print("\n| binary | route 8 1-conn p50 µs | route 9 1-conn p50 µs | Δ µs | PING p50 µs "
          "(Python) | PING p50 µs (redis-benchmark) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in bins:
        rs = runs[name]
        print(f"| {name} | {m([x['twin'] for x in rs])} | {m([x['policy'] for x in rs])} | "
              f"{m([x['delta'] for x in rs])} | {m([x['ping_py'] for x in rs])} | "
              f"{m([x['ping_rb'] for x in rs])} |")


if __name__ == "__main__":
    main()
