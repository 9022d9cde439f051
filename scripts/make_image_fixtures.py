#!/usr/bin/env python3
"""Writes tests/fixtures/images: a small ImageNet-style folder of real photos (scikit-image's
bundled samples) in many formats, and what PIL + timm make of them.

    pip install scikit-image   # plus torch, timm, safetensors, pillow
    python scripts/make_image_fixtures.py

Outputs
  images/<class>/<file>             JPEG (RGB, grayscale, CMYK), PNG (RGB, 16-bit, palette,
                                    alpha), WebP, BMP, GIF; several sizes and aspect ratios
  images_expected.safetensors       per config: timm's eval transform before normalisation
                                    ([N,3,S,S] as u8 levels) for each file, in sorted path order
  images_expected.json              the configs and file order
  images_logits.safetensors         logits of parity/mobilenetv2_035 through timm's full eval
                                    pipeline (the model's default transform), same order
"""
import json
import os

import numpy as np
import torch
import timm
from PIL import Image
from safetensors.torch import save_file, load_file
from skimage import data as skd
from timm.data import create_transform, resolve_data_config

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
CONFIGS = [
    dict(name="bicubic96", input_size=(3, 96, 96), crop_pct=0.875, interpolation="bicubic"),
    dict(name="bilinear80", input_size=(3, 80, 80), crop_pct=0.95, interpolation="bilinear"),
    dict(name="bicubic224", input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic"),
]


def write_images(root):
    chelsea = Image.fromarray(skd.chelsea())            # 451x300 cat
    coffee = Image.fromarray(skd.coffee())              # 600x400
    rocket = Image.fromarray(skd.rocket())              # 427x640 portrait
    astronaut = Image.fromarray(skd.astronaut())        # 512x512
    camera = Image.fromarray(skd.camera())              # 512x512 grayscale
    hubble = Image.fromarray(skd.hubble_deep_field())   # 872x1000
    files = {
        "cat/chelsea.jpg": lambda p: chelsea.save(p, quality=90),
        "cat/chelsea_small.png": lambda p: chelsea.resize((150, 100), Image.BICUBIC).save(p),
        "coffee/coffee_q80.jpg": lambda p: coffee.save(p, quality=80),
        "coffee/coffee_rgba.png": lambda p: coffee.resize((240, 160)).convert("RGBA").save(p),
        "rocket/rocket.webp": lambda p: rocket.resize((214, 320)).save(p, lossless=True),
        "rocket/rocket_cmyk.jpg": lambda p: rocket.resize((200, 300)).convert("CMYK").save(p, quality=92),
        "space/astronaut.bmp": lambda p: astronaut.resize((256, 256)).save(p),
        "space/astronaut_palette.png": lambda p: astronaut.resize((200, 200)).quantize(64).save(p),
        "space/hubble16.png": lambda p: save16(hubble.resize((218, 250)), p),
        "space/camera_gray.jpg": lambda p: camera.resize((300, 300)).save(p, quality=90),
        "space/camera.gif": lambda p: camera.resize((160, 120)).save(p),
    }
    for rel, save in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        save(p)
    return sorted(files)


def save16(img, path):
    """A 16-bit RGB PNG (PIL reads it back as 8-bit RGB)."""
    import zlib, struct
    a = np.asarray(img.convert("RGB")).astype(np.uint16) * 257
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(png)


def main():
    root = os.path.join(HERE, "images")
    files = write_images(root)
    out = {}
    for cfg in CONFIGS:
        t = create_transform(input_size=cfg["input_size"], crop_pct=cfg["crop_pct"],
                             interpolation=cfg["interpolation"], mean=(0, 0, 0), std=(1, 1, 1))
        xs = [t(Image.open(os.path.join(root, f)).convert("RGB")) for f in files]
        # Before normalisation every value is k/255: store k as u8 (4x smaller, exact).
        out[cfg["name"]] = (torch.stack(xs) * 255).round().to(torch.uint8).contiguous()
    save_file(out, os.path.join(HERE, "images_expected.safetensors"))
    with open(os.path.join(HERE, "images_expected.json"), "w") as f:
        json.dump(dict(files=files, configs=CONFIGS), f, indent=1)

    # End to end: the parity checkpoint through timm's own default eval pipeline.
    m = timm.create_model("mobilenetv2_035", pretrained=False, num_classes=10)
    sd = load_file(os.path.join(HERE, "parity", "mobilenetv2_035.safetensors"))
    m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    m.eval()
    cfg = resolve_data_config({}, model=m)
    t = create_transform(**cfg)
    x = torch.stack([t(Image.open(os.path.join(root, f)).convert("RGB")) for f in files])
    with torch.inference_mode():
        logits = m(x)
    save_file({"logits": logits.contiguous()}, os.path.join(HERE, "images_logits.safetensors"))
    print(cfg, logits.shape, float(logits.abs().max()))


if __name__ == "__main__":
    main()
