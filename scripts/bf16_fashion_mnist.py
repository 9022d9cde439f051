#!/usr/bin/env python3
"""bf16 accuracy on real data: the Fashion-MNIST members' test-set logits from committee
(`eval --dtype f32` and `--dtype bf16` caches) against timm's f32 on the same images, beside
PyTorch's own bf16 autocast (channels_last) distance. Prints one JSON object per member.

    committee eval --model M --weights W --data DATA/test --dtype f32  --save-logits OURS-f32.safetensors
    committee eval --model M --weights W --data DATA/test --dtype bf16 --save-logits OURS-bf16.safetensors
    venv/bin/python scripts/bf16_fashion_mnist.py DATA/test W M OURS-f32.safetensors OURS-bf16.safetensors
"""
import json
import os
import sys

import numpy as np
import timm
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file


def main():
    root, weights, model, ours_f32, ours_bf16 = sys.argv[1:6]
    torch.manual_seed(0)
    sd = load_file(weights)
    chans = sd["conv_stem.weight"].shape[1]
    classes = sd["classifier.weight"].shape[0]
    m = timm.create_model(model, pretrained=False, num_classes=classes, in_chans=chans)
    m.load_state_dict({k: v.float() for k, v in sd.items()})
    m = m.eval().to(memory_format=torch.channels_last)
    with safe_open(ours_f32, "pt") as f:
        meta = f.metadata()
        a32, labels = f.get_tensor("logits").float(), f.get_tensor("labels").long()
    with safe_open(ours_bf16, "pt") as f:
        a16 = f.get_tensor("logits").float()
    cfg = json.loads(safe_open(weights, "np").metadata()["committee.eval"])
    mean = torch.tensor(cfg["mean"][:chans]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"][:chans]).view(1, -1, 1, 1)
    files = json.loads(meta["files"])
    mode = "L" if chans == 1 else "RGB"
    x = np.stack([np.asarray(Image.open(os.path.join(root, p)).convert(mode)) for p in files])
    x = torch.from_numpy(x).float().div(255.0)
    x = (x.unsqueeze(1) if chans == 1 else x.permute(0, 3, 1, 2)).sub(mean).div(std)
    x = x.contiguous(memory_format=torch.channels_last)
    t32, t16 = [], []
    with torch.inference_mode():
        for b in torch.split(x, 500):
            t32.append(m(b).float())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                t16.append(m(b).float())
    t32, t16 = torch.cat(t32), torch.cat(t16)
    scale = max(1.0, float(t32.abs().max()))
    top1 = lambda z: round(100.0 * float((z.argmax(1) == labels).float().mean()), 3)
    agree = lambda z, r: round(100.0 * float((z.argmax(1) == r.argmax(1)).float().mean()), 3)
    rel = lambda z, r: float((z - r).abs().max()) / scale
    print(json.dumps({
        "member": meta.get("name"), "model": model, "images": len(files),
        "ours_f32_vs_timm_f32_rel_err": rel(a32, t32),
        "top1": {"timm_f32": top1(t32), "timm_bf16": top1(t16), "ours_f32": top1(a32), "ours_bf16": top1(a16)},
        "bf16_top1_agreement_with_f32": {"timm": agree(t16, t32), "ours": agree(a16, a32)},
        "bf16_max_rel_err_vs_timm_f32": {"timm": rel(t16, t32), "ours": rel(a16, t32)},
        "bf16_mean_abs_err_vs_timm_f32": {"timm": float((t16 - t32).abs().mean()), "ours": float((a16 - t32).abs().mean())},
        "torch": torch.__version__, "timm": timm.__version__,
    }))


if __name__ == "__main__":
    main()
