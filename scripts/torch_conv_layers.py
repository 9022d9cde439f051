"""PyTorch's side of `cargo run --release -p committee-ops --example train_conv_rate`: ResNet's
stem and 3x3 training layers at batch 8, fastest of 7 calls each, forward alone, forward + weight
gradient, forward + both gradients (the input then requires a gradient).

    venv/bin/python scripts/torch_conv_layers.py [THREADS] [bf16]

`bf16`: channels_last and bf16 autocast (PyTorch's best on a CPU with bf16), else eager fp32
(NCHW). Run it beside committee's example, back to back, on an idle host.
"""

import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
bf16 = len(sys.argv) > 2 and sys.argv[2] == "bf16"
torch.set_num_threads(threads)
fmt = torch.channels_last if bf16 else torch.contiguous_format
# (name, c_in, c_out, kernel, map, stride): ResNet's stem and 3x3 layers at 224 px.
layers = [
    ("stem 7x7 s2", 3, 64, 7, 224, 2),
    ("l1 3x3", 64, 64, 3, 56, 1),
    ("l2 3x3 s2", 64, 128, 3, 56, 2),
    ("l2 3x3", 128, 128, 3, 28, 1),
    ("l3 3x3 s2", 128, 256, 3, 28, 2),
    ("l3 3x3", 256, 256, 3, 14, 1),
    ("l4 3x3 s2", 256, 512, 3, 14, 2),
    ("l4 3x3", 512, 512, 3, 7, 1),
]
for name, c_in, c_out, k, hw, s in layers:
    conv = torch.nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False).to(memory_format=fmt)
    x0 = torch.randn(8, c_in, hw, hw).to(memory_format=fmt)
    times = []
    for mode in ["fwd", "fwd+dW", "fwd+dW+dX"]:
        x = x0.clone().requires_grad_(mode == "fwd+dW+dX")
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if mode == "fwd":
                    with torch.no_grad():
                        y = conv(x)
                else:
                    y = conv(x)
            if mode != "fwd":
                y.float().sum().backward()
            best = min(best, time.perf_counter() - start)
            conv.zero_grad()
        times.append(best * 1e3)
    print(
        f"{name:10} {c_in}->{c_out} {hw}x{hw}: "
        + ", ".join(f"{m} {t:.2f} ms" for m, t in zip(["fwd", "fwd+dW", "fwd+dW+dX"], times))
        + f" ({'bf16 + channels_last' if bf16 else 'eager fp32'})"
    )
