"""PyTorch's bf16-autocast linear on ViT-B/16's layer shapes at batch 8 (1576 tokens), the
counterpart of `cargo run --release -p committee-ops --example bf16_rate`: fastest of 9.
    venv/bin/python scripts/bf16_linear_rate.py [THREADS]"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
t = 8 * 197
for name, m, n, k in [("qkv", t, 2304, 768), ("proj", t, 768, 768), ("fc1", t, 3072, 768),
                      ("fc2", t, 768, 3072)]:
    x, lin = torch.randn(m, k), torch.nn.Linear(k, n)
    best = float("inf")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(9):
            s = time.perf_counter()
            lin(x)
            best = min(best, time.perf_counter() - s)
    print(f"{name:5} {m}x{n}x{k}: {best * 1e3:.2f} ms = {m * n * k / best / 1e9:.0f} GMAC/s")
