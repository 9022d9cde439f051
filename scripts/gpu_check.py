#!/usr/bin/env python3
"""Numerical check of committee's GPU backend at full size: logits of full timm models
(random weights, randomised BatchNorm statistics) on random images, GPU backend at several
batch sizes against flex (the CPU backend the parity fixtures check to 1e-4 against timm).
The small parity fixtures cannot show a kernel that autotuning picks only for large shapes.

    python scripts/gpu_check.py --committee target/release/committee --backend wgpu \
        --model resnet50,vit_base_patch16_224 --out DIR
"""
import argparse
import json
import os
import subprocess

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.numpy import load_file
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--committee", required=True)
    ap.add_argument("--backend", default="wgpu")
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    imgs = os.path.join(a.out, "images", "c0")
    os.makedirs(imgs, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(a.images):
        # Smooth random images (noise upsampled), so features are not pure noise.
        small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((256, 256), Image.BICUBIC).save(f"{imgs}/{i:04}.png")
    print(f"{'model':24} {'backend':8} {'batch':>5} {'rel err vs flex':>16} {'top-1 agree':>12}")
    for name in a.model.split(","):
        torch.manual_seed(0)
        m = timm.create_model(name, pretrained=False).eval()
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 1.5)
        w = os.path.join(a.out, f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, w)

        def logits(backend, batch):
            cache = os.path.join(a.out, f"{name}_{backend}_{batch}.safetensors")
            subprocess.run([a.committee, "eval", "--model", name, "--weights", w, "--data",
                            os.path.join(a.out, "images"), "--backend", backend, "--batch",
                            str(batch), "--save-logits", cache, "--json"], check=True,
                           stdout=subprocess.DEVNULL)
            return load_file(cache)["logits"].astype(np.float64)

        ref = logits("flex", 32)
        for b in map(int, a.batches.split(",")):
            got = logits(a.backend, b)
            rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            agree = float((got.argmax(1) == ref.argmax(1)).mean())
            print(f"{name:24} {a.backend:8} {b:5} {rel:16.2e} {agree:12.3f}", flush=True)
            print(json.dumps({"model": name, "backend": a.backend, "batch": b, "rel_err": rel,
                              "top1_agree": agree}), file=open(os.path.join(a.out, "check.jsonl"), "a"))


if __name__ == "__main__":
    main()
