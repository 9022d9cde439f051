#!/usr/bin/env python3
"""Statistics of timm's own random initialisation, per parameter, for `crates/zoo/tests/init.rs`
(committee's `--scheme timm` must draw every parameter from the same distribution).

    venv/bin/python scripts/init_reference.py > tests/fixtures/init/timm_init.json

Per model (timm.create_model, 1000 classes, seed 0) and state-dict key (BatchNorm's running
statistics included): number of elements,
mean, standard deviation (population) and largest absolute value.
"""
import json

import timm
import torch

MODELS = ["mobilenetv2_100", "efficientnet_b0", "resnet18", "resnet50", "vit_tiny_patch16_224"]


def main():
    torch.manual_seed(0)
    out = {"timm": timm.__version__, "torch": torch.__version__, "models": {}}
    for name in MODELS:
        m = timm.create_model(name, pretrained=False)
        stats = {}
        for k, p in m.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue  # a counter, not drawn
            x = p.detach().double().flatten()
            stats[k] = {
                "numel": x.numel(),
                "mean": x.mean().item(),
                "std": x.std(unbiased=False).item(),
                "max_abs": x.abs().max().item(),
            }
        out["models"][name] = stats
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
