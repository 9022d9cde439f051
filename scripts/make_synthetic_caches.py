#!/usr/bin/env python3
"""Synthetic logits caches (the format `committee eval --save-logits` writes) for benchmarking
`committee search`: M models of rising cost and accuracy, N images, C classes.

Each model's logits are a shared per-image difficulty/noise component (models agree on hard
images, as real ones do) plus a model-specific one, with the true class boosted by a strength
that grows with the model's cost. Only speed and plumbing are measured with these; no claim
about real models rests on them.

    python scripts/make_synthetic_caches.py --out /tmp/pool --models 10 --images 50000 --classes 1000
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    n, c = a.images, a.classes
    labels = rng.integers(0, c, n).astype(np.int64)
    files = json.dumps([f"c{y:04d}/img{i:06d}.JPEG" for i, y in enumerate(labels)])
    shared = rng.standard_normal((n, c), dtype=np.float32)
    hardness = rng.gamma(2.0, 1.0, n).astype(np.float32)
    for m in range(a.models):
        gmacs = 0.4 * 1.6**m
        strength = 3.0 + 0.9 * m
        own = rng.standard_normal((n, c), dtype=np.float32)
        logits = 0.7 * shared + 0.7 * own
        logits[np.arange(n), labels] += strength / hardness
        logits *= 1.5
        name = f"synth_m{m}"
        meta = {
            "model": name, "weights": "", "weights_sha256": "", "img_size": "224",
            "gmacs": repr(gmacs), "num_classes": str(c), "data_root": "/synthetic",
            "files": files,
        }
        save_file({"logits": logits.astype(np.float32), "labels": labels},
                  os.path.join(a.out, f"{name}.safetensors"), metadata=meta)
        acc = (logits.argmax(1) == labels).mean()
        print(f"{name}: {gmacs:.3f} GMACs, top-1 {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
