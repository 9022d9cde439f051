"""PyTorch's side of `cargo run --release -p committee-train --example optim_rate -- MODEL`:
the optimiser's step alone (PyTorch's default implementation on a CPU) on a timm model's
parameters with random gradients, fastest of ROUNDS: `torch.optim.SGD` (momentum 0.9,
weight decay 5e-4), or with `adamw` `torch.optim.AdamW` (weight decay 0.05, eps 1e-8).

    venv/bin/python scripts/torch_optim_rate.py MODEL [ROUNDS] [THREADS] [adamw]
"""

import sys
import time

import timm
import torch

name = sys.argv[1] if len(sys.argv) > 1 else "resnet50"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
model = timm.create_model(name)
for p in model.parameters():
    p.grad = torch.randn_like(p)
adamw = len(sys.argv) > 4 and sys.argv[4] == "adamw"
if adamw:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, eps=1e-8)
else:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
opt.step()  # creates the optimiser's state
best = float("inf")
for _ in range(rounds):
    start = time.perf_counter()
    opt.step()
    best = min(best, time.perf_counter() - start)
kind = "AdamW" if adamw else "SGD"
print(f"{name}: torch.optim.{kind} {best * 1e3:.1f} ms (fastest of {rounds})")
