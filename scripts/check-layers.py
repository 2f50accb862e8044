#!/usr/bin/env python3
"""Checks that src/ includes point one way (docs/architecture.md, "Layers"):

  codecs <- data <- loop <- transport <- conn <- delivery <- broker <- proto <- worker <- server <- main

A file may include headers of its own layer or of lower ones. Every file
must be placed in a layer here (a new module has to be placed on purpose),
the include graph between modules must have no cycle, and the broker may
depend on nothing above delivery. Known exceptions are listed in DEBT with
the reason each still exists; the check fails on any other upward include,
and on a DEBT entry that is no longer needed (so the list only shrinks).

Usage: scripts/check-layers.py [SRC_DIR]   (exit 0 clean, 1 violations)
"""
import os
import re
import sys

LAYERS = [
    ("codecs", "ws http utf8 auth pmd sse redis_slot broker_url names log config query coalesce assets"),
    ("data", "msg outq ring chan groups envelope metrics admit deflate broker_info"),
    ("loop", "loop"),
    ("transport", "transport tls tls13rec"),
    ("conn", "conn conn_sse"),
    ("delivery", "delivery inbox"),
    ("broker", "broker broker_redis resp"),
    ("proto", "conn_http conn_ws conn_sse_route"),
    ("worker", "worker listener drain"),
    ("server", "server memwatch"),
    ("main", "main"),
]

BROKER_MAY_USE = {"codecs", "data", "loop", "delivery", "broker"}

# One module in two files, split only for size: memwatch is the server's memory watch, conn_sse
# the SSE framing of a connection (conn.c queues through it, it queues through conn.c).
SAME_MODULE = {"memwatch": "server", "conn_sse": "conn"}

# Upward includes that remain, each with why. Remove a line when its include goes.
DEBT = {
}

# Any spelling the preprocessor takes: quotes or angle brackets, with or without a space, with a
# path in front. Angle-bracket includes of names that are not src modules are system headers.
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]*)[">]', re.M)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    problems, edges, used_debt = [], {}, set()
    layer_of, names = {}, [name for name, _ in LAYERS]
    for i, (name, mods) in enumerate(LAYERS):
        for m in mods.split():
            if m in layer_of:
                problems.append(f"module '{m}' is placed twice ({names[layer_of[m]]} and {name})")
            else:
                layer_of[m] = i
    for fn in sorted(os.listdir(src)):
        if os.path.isdir(os.path.join(src, fn)):
            problems.append(f"src/{fn}/: subdirectories are not checked (keep src/ flat)")
            continue
        if not fn.endswith((".c", ".h")):
            continue
        mod = fn[:-2]
        if mod not in layer_of:
            problems.append(f"src/{fn}: module '{mod}' is in no layer (place it in scripts/check-layers.py)")
            continue
        with open(os.path.join(src, fn), encoding="utf-8") as f:
            text = f.read()
        for quote, path in INCLUDE.findall(text):
            base = os.path.basename(path)
            dep = base[:-2] if base.endswith(".h") else base
            if quote == "<" and dep not in layer_of:
                continue  # a system header
            if dep == mod:
                continue
            if dep not in layer_of:
                problems.append(f"src/{fn}: includes {path}, which is no module in a layer")
                continue
            edges.setdefault(mod, set()).add(dep)
            lm, ld = layer_of[mod], layer_of[dep]
            # The broker rides on the loop and hands messages to delivery: nothing else above data.
            broker_bad = names[lm] == "broker" and names[ld] not in BROKER_MAY_USE
            if ld > lm or broker_bad:
                if (mod, dep) in DEBT:
                    used_debt.add((mod, dep))
                    continue
                problems.append(f"src/{fn}: includes {dep}.h: {names[lm]} may not depend on "
                                f"{names[ld]}")
    for key in sorted(set(DEBT) - used_debt):
        problems.append(f"DEBT entry {key[0]} -> {key[1]} is no longer needed: remove it")
    # Cycles between modules, debt edges excluded (they are listed above).
    graph = {}
    for m, ds in edges.items():
        for d in ds:
            a, b = SAME_MODULE.get(m, m), SAME_MODULE.get(d, d)
            if (m, d) not in DEBT and a != b:
                graph.setdefault(a, set()).add(b)
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                problems.append("include cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    for p in problems:
        print(p)
    print(f"check-layers: {len(edges)} modules, {sum(len(v) for v in edges.values())} includes, "
          f"{len(used_debt)} known exceptions, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
