#!/usr/bin/env bash
# Idempotent set-up (root or sudo) on Debian 12/13 or Ubuntu 22.04/24.04: the system
# packages, libvirt daemons, the guest kernel's headers, a virtualenv with the package
# and test deps. Everything the project needs is installed here and nowhere else.
# Package names per distribution live in vexfs_cockpit/config/distro.py (one map, also
# read by tests/unit/test_distro.py); this script only installs what it names.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
# A real (not purely virtual) package apt can install: `installed` must find it afterwards.
has_candidate() {
  local c
  c=$(LC_ALL=C apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}
apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

PYTHON_BIN=python3
KV=""
if [ "${VEXFS_SETUP_SKIP_PACKAGES:-0}" = 1 ]; then
  log "VEXFS_SETUP_SKIP_PACKAGES=1: not installing system packages"
else
  # The package map runs on the system Python: a minimal Debian may have none yet.
  if ! command -v python3 >/dev/null && command -v apt-get >/dev/null; then
    log "installing python3 (setup reads its package list with it)"
    as_root apt-get update -qq
    apt_install python3
  fi
  if ! command -v python3 >/dev/null; then
    echo "setup: neither python3 nor apt-get here; supported: Debian 12, Debian 13, Ubuntu 22.04, Ubuntu 24.04" >&2
    exit 2
  fi
  # DISTRO_NAME, KERNEL_PACKAGE, HEADERS_PREFIX, PYTHON_BIN, MISSING_HINT, APT_PACKAGES;
  # an unsupported system gets one line saying what to install, and exit 2 (set -e).
  # VEXFS_OS_RELEASE: another os-release file (the tests point it at other systems').
  distro_vars=$(python3 -I vexfs_cockpit/config/distro.py ${VEXFS_OS_RELEASE:+--os-release "$VEXFS_OS_RELEASE"} shell)
  eval "$distro_vars"

  missing=()
  for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing $DISTRO_NAME packages: ${missing[*]}"
    as_root apt-get update -qq
    absent=()
    for p in "${missing[@]}"; do has_candidate "$p" || absent+=("$p"); done
    if [ ${#absent[@]} -gt 0 ]; then
      echo "setup: apt has no ${absent[*]} on $DISTRO_NAME: $MISSING_HINT" >&2
      exit 1
    fi
    apt_install "${missing[@]}"
  fi
  # The guest kernel is whatever the kernel metapackage installed; its headers must match it.
  KV=$(dpkg-query -W -f='${Depends}' "$KERNEL_PACKAGE" 2>/dev/null | grep -o 'linux-image-[0-9][^ ,]*' | head -1 | sed 's/^linux-image-//' || true)
  if [ -z "$KV" ]; then echo "setup: cannot tell which kernel $KERNEL_PACKAGE installed (dpkg-query -W $KERNEL_PACKAGE)" >&2; exit 1; fi
  if ! installed "$HEADERS_PREFIX$KV"; then
    log "installing $HEADERS_PREFIX$KV (guest kernel headers for kbuild)"
    as_root apt-get update -qq
    apt_install "$HEADERS_PREFIX$KV"
  fi
  # `fleet.guest_kernel: host` boots the running kernel: its headers too, when it is one
  # of this distribution's (a container's or a self-built kernel has no package).
  HV=$(uname -r)
  if [ "$HV" != "$KV" ] && [ -e "/boot/vmlinuz-$HV" ] && ! installed "$HEADERS_PREFIX$HV" && has_candidate "$HEADERS_PREFIX$HV"; then
    log "installing $HEADERS_PREFIX$HV (headers of the running kernel, for --kernel host)"
    apt_install "$HEADERS_PREFIX$HV"
  fi
  # VEXFS_TEST_KERNEL_TREE=1: the opt-in tree-mode test builds a kernel from Debian's source.
  if [ "${VEXFS_TEST_KERNEL_TREE:-0}" = 1 ]; then
    tree_pkgs=()
    for p in linux-source-6.12 gcc make flex bison bc libelf-dev libssl-dev xz-utils kmod; do installed "$p" || tree_pkgs+=("$p"); done
    if [ ${#tree_pkgs[@]} -gt 0 ]; then
      as_root apt-get update -qq
      if has_candidate linux-source-6.12; then
        log "installing ${tree_pkgs[*]} (VEXFS_TEST_KERNEL_TREE=1: the kernel tree test)"
        apt_install "${tree_pkgs[@]}"
      else
        log "VEXFS_TEST_KERNEL_TREE=1: $DISTRO_NAME has no linux-source-6.12 (Debian 12 has it): the kernel tree test will skip"
      fi
    fi
  fi
  # VEXFS_TEST_SSH_HOST=1: the opt-in qemu+ssh end-to-end test (tests/vm/test_remote_host.py)
  # starts its own sshd on a loopback port; the package's own sshd service is never
  # started (policy-rc.d 101 while it installs), so nothing listens on port 22.
  if [ "${VEXFS_TEST_SSH_HOST:-0}" = 1 ] && ! installed openssh-server; then
    log "installing openssh-server (VEXFS_TEST_SSH_HOST=1: the qemu+ssh test; its service is not started)"
    as_root apt-get update -qq
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
      as_root chmod 755 /usr/sbin/policy-rc.d
      made_policy=1
    fi
    apt_install openssh-server
    if [ "$made_policy" = 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  fi
fi

# libvirt daemons (no systemd here; with systemd they are already running).
# Without pgrep "not running" cannot be told from "no pgrep": a second daemon would start.
command -v pgrep >/dev/null || { echo "setup: pgrep is missing: install procps, then run again" >&2; exit 1; }
pgrep -x virtlogd >/dev/null || { log "starting virtlogd"; as_root virtlogd -d; }
pgrep -x libvirtd >/dev/null || { log "starting libvirtd"; as_root libvirtd -d; }
for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done

PY=${PYTHON:-$PYTHON_BIN}
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
log "ready (guest kernel ${KV:-not checked})"
