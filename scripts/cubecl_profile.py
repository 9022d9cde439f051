#!/usr/bin/env python3
"""Sum CubeCL's per-kernel profile log by kernel: where a wgpu/cuda run spends GPU time.

    CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG=/tmp/k.log committee bench --backend wgpu ...
    python scripts/cubecl_profile.py /tmp/k.log [--top 20]

CubeCL writes one line per launched kernel, `| 17.88ms | UnaryFloat | BasicFloatUnary_c78f`;
the table gives each kernel kind's total time, launches and share.
"""
import argparse
import collections
import re

UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
LINE = re.compile(r"^\|\s*([0-9.]+)\s*(s|ms|µs|us|ns)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    total = collections.Counter()
    calls = collections.Counter()
    with open(a.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m:
                continue
            secs = float(m.group(1)) * UNITS[m.group(2)]
            # The kernel's name without the hash of its compile-time options.
            key = f"{m.group(3)} / {re.sub(r'_[0-9a-f]{6,}$', '', m.group(4))}"
            total[key] += secs
            calls[key] += 1
    all_secs = sum(total.values())
    print(f"{all_secs * 1e3:.1f} ms in {sum(calls.values())} kernel launches")
    print(f"{'kernel':70} {'ms':>10} {'calls':>7} {'share':>6}")
    for key, secs in total.most_common(a.top):
        print(f"{key[:70]:70} {secs * 1e3:10.2f} {calls[key]:7} {100 * secs / all_secs:5.1f}%")


if __name__ == "__main__":
    main()
