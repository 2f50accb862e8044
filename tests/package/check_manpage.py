"""The man page documents exactly the flags `herald --help` lists (issue 12).

Flags in --help: the option lines, which start with two spaces and `--` (their descriptions are
indented further). Flags in the man page: the first line of each .TP entry in the OPTIONS section
(`\\-` is roff for `-`). Any difference fails, naming each flag and the side it is missing from.
Also: the page renders without groff warnings, and `herald --version`, the first line of --help
and the man page header all carry the CMake project version.
"""

import argparse
import os
import re
import subprocess
import sys

FLAG_RE = re.compile(r"--[a-z0-9][a-z0-9-]*")


def run(cmd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    return p.returncode, p.stdout, p.stderr


def help_flags(text):
    flags = []
    for line in text.splitlines():
        if line.startswith("  --"):
            flags += FLAG_RE.findall(line)
    return flags


def man_flags(src):
    flags, in_options, after_tp = [], False, False
    for line in src.splitlines():
        if line.startswith(".SH"):
            in_options = line.split(None, 1)[1:] == ["OPTIONS"]
            continue
        if not in_options:
            continue
        if line.startswith(".TP"):
            after_tp = True
            continue
        if after_tp:
            flags += FLAG_RE.findall(line.replace("\\-", "-"))
            after_tp = False
    return flags


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--herald", required=True)
    ap.add_argument("--man", required=True)
    ap.add_argument("--version", required=True)
    a = ap.parse_args()
    problems = []

    rc, out, err = run([a.herald, "--help"])
    if rc != 0:
        sys.exit(f"herald --help exited {rc}: {err}")
    with open(a.man, encoding="utf-8") as f:
        src = f.read()
    in_help, in_man = help_flags(out), man_flags(src)
    if len(in_help) < 30:
        problems.append(f"only {len(in_help)} flags parsed from --help: has its layout changed?")
    for name, flags in (("--help", in_help), ("the man page", in_man)):
        dups = sorted({f for f in flags if flags.count(f) > 1})
        if dups:
            problems.append(f"listed more than once in {name}: {' '.join(dups)}")
    for f in sorted(set(in_help) - set(in_man)):
        problems.append(f"{f} is in --help but not in the man page (docs/herald.1.in, OPTIONS)")
    for f in sorted(set(in_man) - set(in_help)):
        problems.append(f"{f} is in the man page but not in --help")

    want = f"herald {a.version}"
    rc, vout, verr = run([a.herald, "--version"])
    if rc != 0 or vout.strip() != want:
        problems.append(f"herald --version printed {vout.strip()!r} (exit {rc}), expected {want!r}")
    first = out.splitlines()[0] if out else ""
    if not first.startswith(want):
        problems.append(f"--help starts with {first!r}, expected the version line {want!r}")
    th = [l for l in src.splitlines() if l.startswith(".TH ")]
    if not th or f'"{want}"' not in th[0]:
        problems.append(f"man page .TH line {th[:1]} does not carry {want!r}")
    if "@" in "".join(l for l in src.splitlines() if not l.startswith('.\\"')):
        problems.append("man page has an unsubstituted @VARIABLE@")

    # -ww: all warnings; -z: no output, only diagnostics.
    try:
        rc, _, gerr = run(["groff", "-man", "-Tutf8", "-ww", "-z", a.man])
    except FileNotFoundError:
        sys.exit("groff not found: install groff-base (scripts/deps.sh test does)")
    if rc != 0 or gerr.strip():
        problems.append(f"groff warnings for {a.man} (exit {rc}):\n{gerr}")

    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(set(in_help))} flags in --help and the man page; version {a.version}")


if __name__ == "__main__":
    main()
