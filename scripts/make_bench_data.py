#!/usr/bin/env python3
"""A synthetic ImageNet-like folder for throughput benchmarks, from real photos (scikit-image
samples): N JPEGs (quality 90) of ImageNet's typical sizes, random crops, 8 classes; plus a
random-init timm checkpoint.

    python scripts/make_bench_data.py OUT_DIR [--n 256] [--model resnet50]
"""
import argparse
import os
import random

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--model", default="resnet50")
    a = ap.parse_args()
    rng = random.Random(0)
    photos = [Image.fromarray(f()) for f in (skd.chelsea, skd.coffee, skd.rocket, skd.astronaut,
                                             skd.hubble_deep_field, skd.retina)]
    for i in range(a.n):
        p = photos[i % len(photos)].convert("RGB")
        w, h = p.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        size = rng.choice([(500, 375), (375, 500), (500, 333), (640, 480), (500, 500)])
        img = p.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        d = os.path.join(a.out, "images", f"class{i % 8}")
        os.makedirs(d, exist_ok=True)
        img.save(os.path.join(d, f"{i:05d}.jpg"), quality=90)
    m = timm.create_model(a.model, pretrained=False)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(a.out, f"{a.model}.safetensors"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
