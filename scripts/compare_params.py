#!/usr/bin/env python3
"""Compares the tensor values of two seqrec model files, byte for byte.

Usage: scripts/compare_params.py BEFORE.safetensors AFTER.safetensors

A refactor that must not change training (same seed, same threads, same
parameter bytes) is checked with it: tensors are matched by name, and a
tensor renamed by the refactor is matched by its bytes instead, so the
check is of values, not of names or metadata. Exits 1 on any difference.
"""
import hashlib
import json
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {
        name: (t["dtype"], tuple(t["shape"]), data[t["data_offsets"][0] : t["data_offsets"][1]])
        for name, t in header.items()
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before, after = tensors(sys.argv[1]), tensors(sys.argv[2])
    bad = []
    unmatched_after = {k: v for k, v in after.items() if k not in before}
    by_bytes = {hashlib.sha256(v[2]).hexdigest(): k for k, v in unmatched_after.items()}
    same = 0
    for name, (dtype, shape, raw) in sorted(before.items()):
        if name in after:
            if after[name] != (dtype, shape, raw):
                bad.append(f"{name}: values differ")
            else:
                same += 1
            continue
        match = by_bytes.pop(hashlib.sha256(raw).hexdigest(), None)
        if match is None:
            bad.append(f"{name}: no tensor of AFTER holds its values")
        else:
            same += 1
            print(f"{name} -> {match} (renamed, same values)")
            unmatched_after.pop(match)
    for name in sorted(unmatched_after):
        if hashlib.sha256(unmatched_after[name][2]).hexdigest() in by_bytes:
            bad.append(f"{name}: only in AFTER")
    print(f"{same} tensors equal, {len(bad)} differ")
    for line in bad:
        print("  " + line)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
