#!/usr/bin/env bash
# What a device call runs on the lent GPU machine (see scripts/gpu_pack.sh, which makes
# .gpu/bin.tar.xz and .gl/): unpacks the binaries and the Vulkan/GL loaders, points the loader
# at NVIDIA's driver, then runs `scripts/gpu_session.sh PHASE` (default all) within LIMIT
# seconds.
set -u
mkdir -p .gpu/bin
if command -v xz >/dev/null; then
    xz -dc .gpu/bin.tar.xz | tar -x -C .gpu/bin
else
    python3 -c "import tarfile; tarfile.open('.gpu/bin.tar.xz').extractall('.gpu/bin')"
fi
chmod +x .gpu/bin/*
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
ls -la .gpu/bin
timeout "${LIMIT:-560}" bash scripts/gpu_session.sh "${PHASE:-all}"
echo "session exit $?"
