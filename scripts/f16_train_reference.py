#!/usr/bin/env python3
"""PyTorch's own distance between one mixed-precision f16 training step and the f32 step:
timm's model at 64 px, batch 8, from the same initialisation, one SGD step (lr 0.1, momentum
0.9, weight decay 5e-4 except on norms and biases, label smoothing 0.1) in f32 and under
`torch.autocast(dtype=float16)` with the loss scaled (2^10, halved until every gradient is
finite, as GradScaler would after skipped steps). For each float state-dict tensor that the
f32 step changed: |update_f16 - update_f32| / |update_f32| (Euclidean norms). The median and
the largest over the tensors, each the median over `SEEDS` initialisations and batches, go
to tests/fixtures/train/f16_pytorch.json; tests/train_f16.rs holds committee's
`--dtype f16` step to them.

    venv/bin/python scripts/f16_train_reference.py
"""
import copy
import json
import os
import statistics

import timm
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train", "f16_pytorch.json")
MODELS = ["vit_tiny_patch16_224", "mobilenetv2_035"]
SEEDS = 5
PX = 64


def step(m0, x, y, half):
    m = copy.deepcopy(m0)
    m.train()
    decay = [p for n, p in m.named_parameters() if p.ndim > 1 and "token" not in n and "pos_embed" not in n]
    plain = [p for n, p in m.named_parameters() if not (p.ndim > 1 and "token" not in n and "pos_embed" not in n)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": plain, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    scale = 1024.0
    while True:
        state = copy.deepcopy(m.state_dict())
        opt.zero_grad()
        if half:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = crit(m(x).float(), y)
            (loss * scale).backward()
            grads = [p.grad for p in m.parameters() if p.grad is not None]
            if not all(torch.isfinite(g).all() for g in grads):
                # A skipped step: the forward's running statistics stay as PyTorch leaves them
                # only in a run; here each try starts from the same state.
                m.load_state_dict(state)
                scale /= 2
                continue
            for g in grads:
                g /= scale
        else:
            loss = crit(m(x), y)
            loss.backward()
        opt.step()
        return loss.item(), {k: v.detach().clone().double() for k, v in m.state_dict().items()
                             if v.dtype.is_floating_point}, scale


def main():
    out = {}
    for name in MODELS:
        meds, maxes, losses, scales = [], [], [], []
        for seed in range(SEEDS):
            torch.manual_seed(seed)
            kw = {"img_size": PX} if "vit" in name else {}
            m0 = timm.create_model(name, num_classes=10, pretrained=False, **kw)
            x = torch.randn(8, 3, PX, PX)
            y = torch.tensor([0, 3, 5, 7, 9, 1, 2, 2])
            init = {k: v.detach().clone().double() for k, v in m0.state_dict().items() if v.dtype.is_floating_point}
            l32, s32, _ = step(m0, x, y, False)
            l16, s16, scale = step(m0, x, y, True)
            rel = []
            for k, w0 in init.items():
                d32, d16 = s32[k] - w0, s16[k] - w0
                n = d32.norm().item()
                if n > 0:
                    rel.append((d16 - d32).norm().item() / n)
            meds.append(statistics.median(rel))
            maxes.append(max(rel))
            losses.append(abs(l16 - l32) / l32)
            scales.append(scale)
        out[name] = {
            "update_rel_median": statistics.median(meds),
            "update_rel_max": statistics.median(maxes),
            "loss_rel": statistics.median(losses),
            "scales": scales,
            "px": PX,
            "batch": 8,
            "seeds": SEEDS,
        }
        print(name, out[name])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"torch": torch.__version__, "timm": timm.__version__, "models": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
