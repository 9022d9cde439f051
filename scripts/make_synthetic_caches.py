#!/usr/bin/env python3
"""Synthetic logits caches (the format `committee eval --save-logits` writes) for benchmarking
`committee search`: M models of rising cost and accuracy, N images, C classes.

Each model's logits are a shared per-image difficulty/noise component (models agree on hard
images, as real ones do) plus a model-specific one, with the true class boosted by a strength
that grows with the model's cost. Only speed and plumbing are measured with these; no claim
about real models rests on them.

--kind picks the pool's shape (the search benchmarks in docs/committees.md use all four):
  ladder    rising cost and strength, one noise mix (the original pools)
  varied    costs drawn log-uniform in 0.2-30 GMACs, strength loosely tied to cost, each
            model its own mix of shared and own noise (differently correlated errors)
  clusters  a few base models, each with near-duplicates (the base plus a little noise, at
            similar cost), as a pool of fine-tuned variants looks
  diverse   varied, plus cheap weak models whose errors are independent of the others' (a
            weak but cheap and diverse first stage pays in the best cascade)

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
    ap.add_argument("--kind", default="ladder", choices=["ladder", "varied", "clusters", "diverse"])
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    n, c = a.images, a.classes
    labels = rng.integers(0, c, n).astype(np.int64)
    files = json.dumps([f"c{y:04d}/img{i:06d}.JPEG" for i, y in enumerate(labels)])
    shared = rng.standard_normal((n, c), dtype=np.float32)
    hardness = rng.gamma(2.0, 1.0, n).astype(np.float32)
    base = None
    for m in range(a.models):
        if a.kind == "ladder":
            gmacs = 0.4 * 1.6**m
            strength = 3.0 + 0.9 * m
            own = rng.standard_normal((n, c), dtype=np.float32)
            logits = 0.7 * shared + 0.7 * own
            logits[np.arange(n), labels] += strength / hardness
            logits *= 1.5
        elif a.kind == "clusters" and m % 4 != 0:
            # A near-duplicate of the cluster's base model.
            gmacs = base[0] * rng.uniform(0.85, 1.15)
            logits = base[1] + 0.25 * rng.standard_normal((n, c), dtype=np.float32)
        else:
            gmacs = float(0.2 * 150 ** rng.uniform())
            strength = 2.0 + 1.2 * np.log(gmacs / 0.2) * rng.uniform(0.5, 1.5)
            mix = rng.uniform(0.2, 0.9)
            cheap_diverse = a.kind == "diverse" and m % 3 == 0
            if cheap_diverse:
                gmacs, strength, mix = float(rng.uniform(0.1, 0.4)), rng.uniform(2.0, 3.5), 0.05
            own = rng.standard_normal((n, c), dtype=np.float32)
            logits = mix * shared + (1 - mix) * own
            logits[np.arange(n), labels] += strength / (hardness if not cheap_diverse else
                                                        rng.gamma(2.0, 1.0, n).astype(np.float32))
            logits *= rng.uniform(1.0, 2.0)
            base = (gmacs, logits)
        name = f"synth_m{m}"
        meta = {
            "model": name, "weights": "", "weights_sha256": "", "img_size": "224",
            "gmacs": repr(float(gmacs)), "num_classes": str(c), "data_root": "/synthetic",
            "files": files,
        }
        save_file({"logits": logits.astype(np.float32), "labels": labels},
                  os.path.join(a.out, f"{name}.safetensors"), metadata=meta)
        acc = (logits.argmax(1) == labels).mean()
        print(f"{name}: {gmacs:.3f} GMACs, top-1 {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
