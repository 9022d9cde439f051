#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: Mesa's software Vulkan driver
# (lavapipe), so the wgpu backend runs without a GPU. Safe to run again.
set -euo pipefail
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
