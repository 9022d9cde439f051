"""PyTorch's side of `cargo run --release -p committee-train --example optim_rate -- MODEL`:
`torch.optim.SGD`'s step alone (momentum 0.9, weight decay 5e-4, PyTorch's default
implementation on a CPU) on a timm model's parameters with random gradients, fastest of ROUNDS.

    venv/bin/python scripts/torch_optim_rate.py MODEL [ROUNDS] [THREADS]
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
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
opt.step()  # creates the momentum buffers
best = float("inf")
for _ in range(rounds):
    start = time.perf_counter()
    opt.step()
    best = min(best, time.perf_counter() - start)
print(f"{name}: torch.optim.SGD {best * 1e3:.1f} ms (fastest of {rounds})")
