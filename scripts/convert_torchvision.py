#!/usr/bin/env python3
"""Converts a PyTorch checkpoint (.pth, e.g. torchvision's) to safetensors, keys unchanged.

    python scripts/convert_torchvision.py IN.pth OUT.safetensors [--half]

committee detects torchvision key names itself (one mapping table in crates/zoo), so this only
changes the container: .pth files can also be loaded directly. Nested training checkpoints
({"state_dict": ...}, {"model": ...}) are unwrapped and a "module." prefix is dropped.
"""
import argparse
import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--half", action="store_true", help="store float tensors as f16")
    a = ap.parse_args()
    sd = torch.load(a.src, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        if a.half and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous()
    save_file(out, a.dst)
    print(f"wrote {a.dst}: {len(out)} tensors")


if __name__ == "__main__":
    main()
