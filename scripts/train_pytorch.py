#!/usr/bin/env python3
"""The `committee train` recipe for small images, in timm/PyTorch: a reference for accuracy.

Same model (timm; random init: timm's own, or with --init layer-default PyTorch's per-layer
defaults, which are the distributions Burn's layers draw from), data folders, input size (PIL bilinear resize, as committee's
eval/training transform), augmentation (zero-pad 4 + random crop + flip, then timm's
RandomErasing in pixel mode with --reprob), normalisation, SGD momentum (no dampening) with
weight decay off for norms and biases, label smoothing, per-iteration linear warmup then
cosine, batch-mode BatchNorm. Prints one CSV row per epoch like committee's metrics.csv, so
the two runs can be compared line by line:

    python scripts/train_pytorch.py --model mobilenetv2_050 --data DIR/train --val DIR/holdout \
        --epochs 3 --batch 64 --lr 0.05 --seed 0 --threads 2
"""
import argparse
import math
import os
import random
import time

import torch
import timm
from PIL import Image


def folder(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    items = []
    for i, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            items.append((os.path.join(root, c, f), i))
    return classes, items


def load(items, chans, size=None):
    """All images as one uint8 tensor (N, C, H, W): Fashion-MNIST fits in memory. With `size`,
    each is resized with PIL's bilinear filter first (committee resizes the RGB image, then
    converts to L; for grey images the two orders agree)."""
    mode = "L" if chans == 1 else "RGB"

    def one(p):
        im = Image.open(p).convert("RGB")
        if size and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return im.convert(mode)

    ims = [one(p) for p, _ in items]
    w, h = ims[0].size
    xs = [torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8) for im in ims]
    x = torch.stack(xs).view(len(items), h, w, chans).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([y for _, y in items])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--val")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--stop-after", type=int,
                    help="run only the first N epochs of the --epochs schedule (a short check "
                    "against the first rows of a long committee run)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--warmup-epochs", type=float, default=0.5)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--img-size", type=int, help="resize to this (default: the images' size)")
    ap.add_argument("--reprob", type=float, default=0.0, help="random erasing probability")
    ap.add_argument("--init", choices=["timm", "layer-default"], default="timm",
                    help="timm: timm's initialisation (He-normal fan-out convolutions); "
                    "layer-default: each layer's reset_parameters(), i.e. uniform +-1/sqrt(fan_in) "
                    "for convolutions and linears, BatchNorm 1/0 -- what committee's Burn layers draw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (augmentation stays on the CPU)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)  # timm's RandomErasing draws from Python's random
    classes, items = folder(a.data)
    x, y = load(items, a.in_chans, a.img_size)
    val = load(folder(a.val)[1], a.in_chans, a.img_size) if a.val else None
    erase = None
    if a.reprob > 0:
        from timm.data.random_erasing import RandomErasing
        erase = RandomErasing(probability=a.reprob, mode="pixel", device="cpu")
    m = timm.create_model(a.model, pretrained=False, in_chans=a.in_chans, num_classes=len(classes))
    if a.init == "layer-default":
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)):
                mod.reset_parameters()
    m = m.to(dev)
    cfg = m.pretrained_cfg
    mean = torch.tensor(cfg["mean"][: a.in_chans]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"][: a.in_chans]).view(1, -1, 1, 1)
    norm = lambda u8: (u8.float() / 255.0 - mean) / std
    decay, plain = [], []
    for n, p in m.named_parameters():
        (plain if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.weight_decay},
                           {"params": plain, "weight_decay": 0.0}], lr=a.lr, momentum=a.momentum)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    n = len(y)
    steps = n // a.batch
    warm = round(a.warmup_epochs * steps)
    total = steps * a.epochs

    def lr_at(it):
        if it < warm:
            return a.lr * (it + 1) / warm
        t = min((it - warm) / max(total - warm, 1), 1.0)
        return 0.5 * a.lr * (1 + math.cos(math.pi * t))

    s = x.shape[-1]
    print("epoch,train_loss,train_top1,val_loss,val_top1,lr,img_per_s,wall_s", flush=True)
    it = 0
    for epoch in range(min(a.epochs, a.stop_after or a.epochs)):
        t0 = time.time()
        m.train()
        order = torch.randperm(n)
        loss_sum, correct = 0.0, 0
        for k in range(steps):
            idx = order[k * a.batch:(k + 1) * a.batch]
            xb = torch.nn.functional.pad(x[idx], (4, 4, 4, 4))
            # Random crop (offset 0..8 of the padded image) and flip, per image.
            offs = torch.randint(0, 9, (len(idx), 2))
            xb = torch.stack([xb[i, :, r:r + s, c:c + s] for i, (r, c) in enumerate(offs.tolist())])
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(-1)
            lr = lr_at(it)
            for g in opt.param_groups:
                g["lr"] = lr
            yb = y[idx].to(dev)
            xn = norm(xb)
            if erase is not None:
                xn = erase(xn)
            out = m(xn.to(dev))
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
        wall = time.time() - t0
        vl, vt = float("nan"), float("nan")
        if val is not None:
            m.eval()
            with torch.inference_mode():
                vx, vy = val
                ce, right = 0.0, 0
                for i in range(0, len(vy), 256):
                    o = m(norm(vx[i:i + 256]).to(dev))
                    t = vy[i:i + 256].to(dev)
                    ce += torch.nn.functional.cross_entropy(o, t, reduction="sum").item()
                    right += (o.argmax(1) == t).sum().item()
                vl, vt = ce / len(vy), 100.0 * right / len(vy)
        seen = steps * a.batch
        print(f"{epoch + 1},{loss_sum / seen:.6f},{100.0 * correct / seen:.4f},{vl:.6f},{vt:.4f},"
              f"{lr:.6e},{seen / wall:.2f},{time.time() - t0:.2f}", flush=True)


if __name__ == "__main__":
    main()
