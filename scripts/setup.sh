#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (root): Debian packages, libvirt
# daemons, the guest kernel's headers, a virtualenv with the package and test deps.
# Everything the project needs is installed here and nowhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  linux-image-amd64 busybox-static dropbear-bin e2fsprogs cpio kmod
  gcc make libc6-dev openssh-client python3-venv python3-dev tmux fio genisoimage
  # `vexfs-cockpit image base` (the disk template's Debian image): debootstrap, boot loader
  mmdebstrap extlinux syslinux-common
  # `metrics serve` scraped by a real Prometheus in tests/test_monitoring_prometheus.py; promtool checks `alerts rules`
  prometheus
)

log() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The guest kernel is whatever linux-image-amd64 installed; its headers must match it.
guest_kernel() { dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null | grep -o 'linux-image-[^ ,]*' | head -1 | sed 's/^linux-image-//'; }
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
KV=$(guest_kernel)
if [ -z "$KV" ]; then echo "setup: cannot tell which kernel linux-image-amd64 installed" >&2; exit 1; fi
if ! dpkg-query -W -f='${Status}' "linux-headers-$KV" 2>/dev/null | grep -q "install ok installed"; then
  log "installing linux-headers-$KV (guest kernel headers for kbuild)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "linux-headers-$KV" >/dev/null
fi

# libvirt daemons (no systemd here; with systemd they are already running).
pgrep -x virtlogd >/dev/null || { log "starting virtlogd"; as_root virtlogd -d; }
pgrep -x libvirtd >/dev/null || { log "starting libvirtd"; as_root libvirtd -d; }
for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing the package and its test dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
log "ready (guest kernel $KV)"
