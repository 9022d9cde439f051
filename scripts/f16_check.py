#!/usr/bin/env python3
"""f16 on the parity fixtures: PyTorch's own distance (model and input `.half()`, channels_last,
as a user wanting speed runs it) from the fixture's f32 logits, beside committee's
`predict --dtype f16` logits (--ours CASE=FILE, the safetensors `--tensor-out` wrote).
The tolerance committee's f16 is held to is PyTorch's distance on the same inputs.

    python3 scripts/f16_check.py --device cuda --ours mobilenetv2_035=/tmp/f16.safetensors
"""
import argparse
import json

import torch
from safetensors.torch import load_file

from bf16_reference import fixtures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ours", action="append", default=[], help="CASE=FILE")
    a = ap.parse_args()
    ours = dict(o.split("=", 1) for o in a.ours)
    dev = torch.device(a.device)
    out = {}
    for case, m, x, ref in fixtures():
        m = m.to(dev, memory_format=torch.channels_last).half()
        with torch.inference_mode():
            half = m(x.to(dev).to(memory_format=torch.channels_last).half()).float().cpu()
        scale = max(1.0, float(ref.abs().max()))
        r = {
            "torch_f16_rel_err": float((half - ref).abs().max()) / scale,
            "torch_f16_top1_agree": float((half.argmax(1) == ref.argmax(1)).float().mean()),
            "device": str(dev), "torch": torch.__version__,
        }
        if case["case"] in ours:
            mine = load_file(ours[case["case"]])["logits"].float()
            r["ours_f16_rel_err"] = float((mine - ref).abs().max()) / scale
            r["ours_f16_top1_agree"] = float((mine.argmax(1) == ref.argmax(1)).float().mean())
            r["ours_over_torch"] = r["ours_f16_rel_err"] / max(r["torch_f16_rel_err"], 1e-12)
        out[case["case"]] = r
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
