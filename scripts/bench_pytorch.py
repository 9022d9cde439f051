#!/usr/bin/env python3
"""PyTorch side of the speed comparison: the same models, batches and threads as
`committee bench`, timm in eval mode under inference_mode, and the ratio when given our JSON.

    python scripts/bench_pytorch.py --model resnet50,efficientnet_b0 --batch 1,8 --threads 2 \
        [--ours ours.json]      # output of `committee bench ... --json`

With --train, a training step as `committee bench --train` times it: train mode, forward,
cross-entropy, backward, SGD momentum 0.9 (no dampening) update.

With --device cuda the clock is read after torch.cuda.synchronize() (committee reads the
logits back, which waits for the GPU too). --cuda-math default keeps PyTorch's defaults
(cuDNN convolutions in TF32, matmuls in full f32); fp32 turns TF32 off everywhere, which is
what committee's wgpu kernels compute.

PyTorch at its best on a CPU: --channels-last (model and input in NHWC) and --bf16 (CPU
autocast to bfloat16: oneDNN's AMX / AVX512-BF16 kernels where the CPU has them). --json
prints one row per (model, batch) with the configuration, for scripts/bench_cpu_bf16.sh.
"""
import argparse
import json
import time

import torch
import timm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--img-size", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--ours", help="committee bench --json output to compare against")
    ap.add_argument("--train", action="store_true", help="time training steps")
    ap.add_argument("--in-chans", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--cuda-math", choices=["default", "fp32"], default="default")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(dtype=bfloat16)")
    ap.add_argument("--half", action="store_true",
                    help="inference: model and input in float16 (.half()); with --train: mixed "
                         "precision, torch.autocast(dtype=float16) with a GradScaler (what "
                         "committee's --dtype f16 training does)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if a.cuda_math == "fp32":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ours = {}
    if a.ours:
        for r in json.load(open(a.ours)):
            ours[(r["model"], r["batch"])] = r
    rows = []
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    amp = a.half and a.train
    autocast = lambda: torch.autocast(dev.type, dtype=torch.float16 if amp else torch.bfloat16,
                                      enabled=a.bf16 or amp)
    if not a.json:
        print(f"{'model':24} {'batch':>5} {'torch img/s':>12} {'ours img/s':>11} {'ratio':>6}")
    for name in a.model.split(","):
        m = timm.create_model(
            name, pretrained=False, in_chans=a.in_chans, num_classes=a.num_classes
        )
        m = (m.train() if a.train else m.eval()).to(dev, memory_format=fmt)
        if a.half and not a.train:
            m = m.half()
        img = a.img_size or m.pretrained_cfg["input_size"][1]
        for b in map(int, a.batch.split(",")):
            x = torch.randn(b, a.in_chans, img, img, device=dev).to(memory_format=fmt)
            if a.half and not a.train:
                x = x.half()
            times = []
            if a.train:
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                scaler = torch.amp.GradScaler(dev.type, enabled=amp)
                y = torch.arange(b, device=dev) % a.num_classes
                for i in range(a.warmup + a.iters):
                    sync()
                    t0 = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    with autocast():
                        loss = torch.nn.functional.cross_entropy(m(x), y)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    loss.item()
                    if i >= a.warmup:
                        times.append(time.perf_counter() - t0)
            else:
                with torch.inference_mode(), autocast():
                    for i in range(a.warmup + a.iters):
                        sync()
                        t0 = time.perf_counter()
                        m(x)
                        sync()
                        if i >= a.warmup:
                            times.append(time.perf_counter() - t0)
            times.sort()
            p50 = times[len(times) // 2]
            ips = b / p50
            o = ours.get((name, b))
            oi = o["img_per_s"] if o else float("nan")
            rows.append({"model": name, "batch": b, "img_size": img, "img_per_s": ips,
                         "p50_ms": p50 * 1e3, "threads": a.threads, "train": a.train,
                         "channels_last": a.channels_last, "bf16": a.bf16, "half": a.half,
                         "torch": torch.__version__})
            if not a.json:
                print(f"{name:24} {b:5} {ips:12.2f} {oi:11.2f} {oi / ips:6.2f}")
    if a.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
