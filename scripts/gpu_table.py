#!/usr/bin/env python3
"""The tables of `scripts/gpu_session.sh all`: every log's JSON rows (committee bench --json,
bench_pytorch.py --json) side by side by (model, batch), img/s, with ours / PyTorch ratios.

    python3 scripts/gpu_table.py DIR
"""
import json
import os
import sys


def rows(path):
    """The JSON array printed in a log beside other output (warnings on stderr)."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return {}
    start = next((i for i, l in enumerate(lines) if l.startswith("[")), None)
    end = max((i for i, l in enumerate(lines) if l.startswith("]")), default=None)
    if start is None or end is None:
        return {}
    try:
        data = json.loads("\n".join(lines[start:end + 1]))
    except ValueError:
        return {}
    return {(r["model"], r["batch"]): r["img_per_s"] for r in data}


def table(d, title, cols, ratios):
    runs = {name: rows(os.path.join(d, name + ".log")) for name in cols}
    keys = sorted({k for r in runs.values() for k in r})
    if not keys:
        return
    print(f"\n{title} (img/s)")
    head = ["model", "batch"] + cols + [f"{a}/{b}" for a, b in ratios]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k in keys:
        cells = [k[0], str(k[1])]
        for c in cols:
            v = runs[c].get(k)
            cells.append(f"{v:.1f}" if v else "")
        for a, b in ratios:
            x, y = runs[a].get(k), runs[b].get(k)
            cells.append(f"{x / y:.3f}" if x and y else "")
        print("| " + " | ".join(cells) + " |")


def main():
    d = sys.argv[1]
    table(d, "Inference f32 (PyTorch TF32 off)",
          ["torch_f32", "ours_f32", "ours_f32_burnconv", "ours_f32_channel", "vulkan_f32"],
          [("ours_f32", "torch_f32"), ("ours_f32_burnconv", "torch_f32"),
           ("vulkan_f32", "torch_f32")])
    table(d, "Inference f16 (PyTorch .half() channels_last)",
          ["torch_f16", "ours_f16", "vulkan_f16"],
          [("ours_f16", "torch_f16"), ("vulkan_f16", "torch_f16")])
    table(d, "Training step, 224 px (PyTorch fp32, TF32 off)",
          ["torch_train", "ours_train", "ours_train_burnbn", "ours_train_burnconv",
           "ours_train_channel"],
          [("ours_train", "torch_train"), ("ours_train_burnbn", "torch_train"),
           ("ours_train_burnconv", "torch_train")])
    table(d, "Training step, 224 px, mixed-precision f16 (PyTorch autocast + GradScaler)",
          ["torch_train_f16", "ours_train_f16"], [("ours_train_f16", "torch_train_f16")])


if __name__ == "__main__":
    main()
