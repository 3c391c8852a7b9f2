#!/usr/bin/env python3
"""Attribute a callgrind dump's cost to "hyper context" vs the rest.

    hyper_buffers_h1attr.py DUMP N [ROOT_SUBSTR[|STOP_SUBSTR...] ...]

(bench/results/2026-12-07-hyper-buffers.md, section 3.) A STOP function's cost is left out
of the root's (e.g. Weir's service future inside the server connection task).

Reads self costs per function (fn=) and inclusive costs per call edge (calls= + next line).
Each function is classed by its symbol: hyper (hyper:: or hyper_util::, incl. <hyper..>
impls and generic instances whose symbol starts with them), weir (weir_*), or other
(std, alloc, tokio, bytes, http, httparse, libc memcpy/malloc, ...). The nearest classed
ancestor (hyper or weir) decides the context of every other function's cost: memcpy
called from hyper code counts as "under hyper", memcpy called from weir code as "under
weir". A callee's inclusive cost is split in the proportions of its own (memoised)
breakdown, so a function called from both contexts is shared out by its callers' edges.

Prints, per request (N requests), Ir and LL misses (DLmr+DLmw) by (context, leaf class).
"""
import collections
import re
import sys

path, N = sys.argv[1], int(sys.argv[2])
names = {}
selfc = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))  # fn -> file -> [Ir, LL]
files = {}
edges = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0, 0]))  # fn -> callee -> [Ir, LL, calls]
events = None


def compressed(table, s):
    """callgrind's name compression: `(id) text` defines id, a later `(id)` refers to it."""
    m = re.match(r'\((\d+)\)(?: (.*))?', s)
    if not m:
        return s
    if m.group(2):
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), s)


def name(s):
    return compressed(names, s)


def fname(s):
    return compressed(files, s)


def cost(parts):
    vals = [int(x) for x in parts[1:]] + [0] * len(events)
    d = dict(zip(events, vals))
    return d.get('Ir', 0), d.get('DLmr', 0) + d.get('DLmw', 0)


cur = None
fl_cur = fi_cur = ''
callee = None
calls = 0
expect = False
with open(path, errors='replace') as f:
    for line in f:
        line = line.rstrip('\n')
        if line.startswith('events:'):
            events = line.split()[1:]
            continue
        if not line or line[0] not in '0123456789+-*cf':
            continue
        if line.startswith('fn='):
            cur = name(line[3:])
            fi_cur = fl_cur
            continue
        if line.startswith('fl='):
            fl_cur = fi_cur = fname(line[3:])
            continue
        if line.startswith('fi=') or line.startswith('fe='):
            fi_cur = fname(line[3:])
            continue
        if line.startswith('cfn='):
            callee = name(line[4:])
            continue
        if line.startswith('calls='):
            calls = int(line[6:].split()[0])
            expect = True
            continue
        if line[0] in '0123456789+-*':
            ir, ll = cost(line.split())
            if expect:
                e = edges[cur][callee]
                e[0] += ir
                e[1] += ll
                e[2] += calls
                expect = False
            else:
                s = selfc[cur][fi_cur]
                s[0] += ir
                s[1] += ll
            continue
        # fl=, fi=, fe=, cfi=, cfl=, ob=, cob=: positions only


def klass(fn):
    s = fn.lstrip('<')
    if s.startswith('hyper::') or s.startswith('hyper_util::'):
        return 'hyper'
    if s.startswith('weir_'):
        return 'weir'
    return None


def leaf(fn):
    s = fn.lstrip('<')
    if 'memcpy' in s or 'memmove' in s or 'memset' in s:
        return 'memcpy/memmove/memset'
    if re.search(r'malloc|free|realloc|calloc|__rust_alloc|__rust_dealloc|__rdl_', s):
        return 'malloc/free'
    if s.startswith('httparse'):
        return 'httparse'
    if s.startswith('http::'):
        return 'http (HeaderMap...)'
    if s.startswith('bytes::'):
        return 'bytes'
    if s.startswith('tokio::net') or s.startswith('tokio::runtime::io') or s.startswith('mio') \
            or 'recv' in s or 'writev' in s or 'send' == s or s.startswith('__libc_') or 'syscall' in s:
        return 'socket I/O (tokio, mio, libc)'
    if s.startswith('tokio::sync') or s.startswith('want::') or s.startswith('futures_channel') \
            or s.startswith('tokio::runtime::task::waker') or 'wake' in s:
        return 'channels, wakers'
    if s.startswith('tokio'):
        return 'tokio other'
    k = klass(fn)
    if k:
        return k + ' (own code)'
    return 'other'


def fileclass(fl):
    if '/hyper-1.' in fl or '/hyper-util-' in fl or '/hyper-exp/' in fl:
        return 'hyper'
    if '/weir-' in fl or '/crates/weir' in fl:
        return 'weir'
    if '/httparse-' in fl:
        return 'httparse'
    if '/http-1.' in fl:
        return 'http (HeaderMap...)'
    if '/bytes-' in fl:
        return 'bytes'
    return None


memo = {}
sys.setrecursionlimit(100000)
stack = set()


def breakdown(fn, ctx):
    """Inclusive cost vector of fn in context ctx: dict (ctx, leaf) -> [Ir, LL], normalised
    to fn's whole inclusive cost (the caller scales it)."""
    k = klass(fn)
    if k:
        ctx = k
    key = (fn, ctx)
    if key in memo:
        return memo[key]
    if key in stack:
        return None
    stack.add(key)
    out = collections.defaultdict(lambda: [0.0, 0.0])
    for fl, s in selfc.get(fn, {}).items():
        fk = fileclass(fl)
        if fk in ('hyper', 'weir'):
            c, lf = fk, fk + ' (own code)'
        else:
            c, lf = ctx, fk or leaf(fn)
        out[(c, lf)][0] += s[0]
        out[(c, lf)][1] += s[1]
    for g, (ir, ll, _c) in edges.get(fn, {}).items():
        if g in STOP:
            out[('STOP', g[:60])][0] += ir
            out[('STOP', g[:60])][1] += ll
            continue
        b = breakdown(g, ctx)
        if b is None:  # recursion: keep the edge as it is
            out[(ctx, leaf(g))][0] += ir
            out[(ctx, leaf(g))][1] += ll
            continue
        tir = sum(v[0] for v in b.values()) or 1
        tll = sum(v[1] for v in b.values()) or 1
        for kk, v in b.items():
            out[kk][0] += ir * v[0] / tir
            out[kk][1] += ll * v[1] / tll
    stack.discard(key)
    memo[key] = out
    return out


STOP = set()
roots = sys.argv[3:]
allfns = set(selfc) | set(edges)
if not roots:
    roots = ['tokio::runtime::task::harness::Harness<T,S>::poll']
for r in roots:
    stop = [x for x in r.split('|')[1:]]
    r = r.split('|')[0]
    STOP = {f for f in allfns if any(x in f for x in stop)} if stop else set()
    memo.clear()
    cands = [f for f in allfns if f == r] or [f for f in allfns if r in f]
    tot = collections.defaultdict(lambda: [0.0, 0.0])
    for fn in cands:
        for kk, v in breakdown(fn, 'root').items():
            tot[kk][0] += v[0]
            tot[kk][1] += v[1]
    print(f"== root {r!r} ({len(cands)} symbols), stop {stop}")
    T = sum(v[0] for v in tot.values())
    print(f"total {T / N:,.0f} Ir/req, LL misses {sum(v[1] for v in tot.values()) / N:,.1f}/req")
    byctx = collections.defaultdict(lambda: [0.0, 0.0])
    for (c, l), v in tot.items():
        byctx[c][0] += v[0]
        byctx[c][1] += v[1]
    for c, v in sorted(byctx.items(), key=lambda kv: -kv[1][0]):
        print(f"  context {c:8} {v[0] / N:9,.0f} Ir/req  {v[1] / N:7.1f} LL/req")
    for (c, l), v in sorted(tot.items(), key=lambda kv: -kv[1][0]):
        if v[0] / N >= 20 or v[1] / N >= 1:
            print(f"    {c:8} {l:32} {v[0] / N:9,.0f} Ir/req  {v[1] / N:7.1f} LL/req")
