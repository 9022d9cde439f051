#!/usr/bin/env python3
"""PyTorch's own bf16 distance on the parity fixtures: each timm-format case's checkpoint
loaded into timm, its input run under CPU autocast to bfloat16 (channels_last, as a user
wanting speed runs it), the logits compared with the fixture's f32 logits; and, since one
input's largest error is one draw of the roundings, the median of that error over
`DRAWS` inputs scaled by 1 + k 2^-12 (each against its own f32 logits). Written to
tests/fixtures/parity/bf16_pytorch.json; crates/zoo/tests/parity_bf16.rs holds committee's
`--dtype bf16` to it.

    venv/bin/python scripts/bf16_reference.py
"""
import json
import os

import torch
from safetensors.torch import load_file
from timm.models import efficientnet as tefn, resnet as tres, vision_transformer as tvit
import timm

D = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "parity")


def build(case):
    name = case["case"]
    if name == "efficientnet_w05_d05":
        return tefn._gen_efficientnet("efficientnet_b0", channel_multiplier=0.5, depth_multiplier=0.5,
                                      pretrained=False, num_classes=10)
    if name == "tf_efficientnet_w05_d05":
        return tefn._gen_efficientnet("tf_efficientnet_b0", channel_multiplier=0.5, depth_multiplier=0.5,
                                      pretrained=False, num_classes=10, bn_eps=1e-3, pad_type="same")
    if name in ("resnet_basic", "resnet_bottleneck"):
        block = tres.BasicBlock if case["block"] == "basic" else tres.Bottleneck
        return tres.ResNet(block=block, layers=case["layers"], channels=tuple(case["channels"]), num_classes=10)
    if name == "mobilenetv2_035":
        return timm.create_model("mobilenetv2_035", pretrained=False, num_classes=10)
    if name == "vit_reduced":
        return tvit.VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                                      mlp_ratio=4, num_classes=10)
    return None


def fixtures():
    """Each timm-format case as (case, timm model with its checkpoint, eval mode, input, f32
    logits)."""
    for case in json.load(open(os.path.join(D, "cases.json"))):
        m = build(case)
        if m is None:
            continue
        ck = os.path.join(D, case["checkpoint"])
        sd = load_file(ck) if ck.endswith(".safetensors") else torch.load(ck, map_location="cpu")
        m.load_state_dict({k: v.float() for k, v in sd.items()})
        io = load_file(os.path.join(D, case["case"] + ".io.safetensors"))
        yield case, m.eval(), io["input"], io["logits"]


DRAWS = 12


def run(m, x):
    """f32 and bf16-autocast logits of `x`."""
    with torch.inference_mode():
        f32 = m(x.to(memory_format=torch.channels_last)).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = m(x.to(memory_format=torch.channels_last)).float()
    return f32, bf


def rel(a, b):
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def main():
    torch.manual_seed(0)
    out = {}
    for case, m, x, ref in fixtures():
        m = m.to(memory_format=torch.channels_last)
        f32, bf = run(m, x)
        draws = sorted(rel(b, f) for f, b in (run(m, x * (1 + k * 2**-12)) for k in range(DRAWS)))
        scale = max(1.0, float(ref.abs().max()))
        out[case["case"]] = {
            "f32_rel_err": float((f32 - ref).abs().max()) / scale,
            "bf16_rel_err": float((bf - ref).abs().max()) / scale,
            "bf16_rel_err_median": draws[DRAWS // 2],
            "bf16_top1_agree": float((bf.argmax(1) == ref.argmax(1)).float().mean()),
            "torch": torch.__version__, "timm": timm.__version__,
        }
        print(case["case"], out[case["case"]])
    with open(os.path.join(D, "bf16_pytorch.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
