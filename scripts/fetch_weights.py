#!/usr/bin/env python3
"""Downloads the checkpoints listed in weights/manifest.toml (needs internet).

    python scripts/fetch_weights.py resnet50 efficientnet_b0      # timm's default tags
    python scripts/fetch_weights.py resnet50 --torchvision imagenet1k_v2

timm checkpoints are the hub's model.safetensors, copied as weights/<name>.<tag>.safetensors;
torchvision ones are saved as weights/<name>.tv_<weights>.safetensors (keys unchanged).
Requires: pip install timm torchvision huggingface_hub safetensors
"""
import argparse
import os
import shutil
import tomllib

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "weights")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="+")
    ap.add_argument("--torchvision", metavar="WEIGHTS", help="e.g. imagenet1k_v1 instead of timm's")
    a = ap.parse_args()
    with open(os.path.join(HERE, "manifest.toml"), "rb") as f:
        manifest = tomllib.load(f)
    for name in a.names:
        entry = manifest.get(name)
        if entry is None:
            raise SystemExit(f"{name}: not in weights/manifest.toml")
        if a.torchvision:
            import torchvision.models as tvm
            from safetensors.torch import save_file
            tv = entry.get("torchvision", {}).get(a.torchvision)
            if tv is None:
                raise SystemExit(f"{name}: no torchvision weights '{a.torchvision}'")
            sd = tvm.get_weight(tv["weights"]).get_state_dict(progress=True)
            dst = os.path.join(HERE, f"{name}.tv_{a.torchvision}.safetensors")
            save_file({k: v.contiguous() for k, v in sd.items()}, dst)
        else:
            from huggingface_hub import hf_hub_download
            if "timm_hub" not in entry:
                raise SystemExit(f"{name}: timm publishes no weights; try --torchvision")
            src = hf_hub_download(entry["timm_hub"], "model.safetensors")
            dst = os.path.join(HERE, f"{name}.{entry['timm_tag']}.safetensors")
            shutil.copyfile(src, dst)
        print(f"{name}: {dst}")


if __name__ == "__main__":
    main()
