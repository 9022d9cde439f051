#!/usr/bin/env python3
"""Stores a trained member's float32 tensors as float16 (half the size; committee and timm
load f16 as f32), keeping integer tensors and the metadata (eval preprocessing).

    python scripts/half_weights.py IN.safetensors OUT.safetensors
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

src, dst = sys.argv[1], sys.argv[2]
with safe_open(src, "np") as f:
    meta = f.metadata()
    tensors = {k: f.get_tensor(k) for k in f.keys()}
out = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in tensors.items()}
save_file(out, dst, metadata=meta)
