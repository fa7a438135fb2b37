#!/usr/bin/env python3
"""Lines per module and the longest functions of the crate's Rust sources.

Usage: scripts/code_stats.py [ROOT] [--top N]

A module is a folder or file under src/ (and python/src as `python`);
a function runs from its `fn` line to the line where its braces close.
Used to report what a refactor did to the code's shape.
"""
import re
import sys
from pathlib import Path

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def functions(path):
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = lines[j].split("//")[0]
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break
            j += 1
        if started:
            out.append((j - i + 1, f"{path}:{i + 1} {m.group(6)}"))
        i += 1
    return out


def main():
    args = sys.argv[1:]
    top = 10
    if "--top" in args:
        k = args.index("--top")
        top = int(args[k + 1])
        del args[k : k + 2]
    root = Path(args[0] if args else ".")
    modules = {}
    fns = []
    for base, prefix in [(root / "src", ""), (root / "python" / "src", "python/")]:
        for path in sorted(base.rglob("*.rs")):
            rel = path.relative_to(base)
            module = prefix + (rel.parts[0].removesuffix(".rs") if len(rel.parts) > 1 or prefix == "" else "")
            module = module.rstrip("/") or "python"
            modules[module] = modules.get(module, 0) + len(path.read_text().splitlines())
            fns += functions(path)
    print("lines per module:")
    for name, n in sorted(modules.items(), key=lambda kv: -kv[1]):
        print(f"  {name:12} {n:6}")
    print(f"the {top} longest functions:")
    for n, where in sorted(fns, reverse=True)[:top]:
        where = where.replace(str(root) + "/", "")
        print(f"  {n:5}  {where}")


if __name__ == "__main__":
    main()
