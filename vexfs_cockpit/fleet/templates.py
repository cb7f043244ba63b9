"""libvirt domain XML from vm_templates/*.xml.j2, and a free loopback port for SSH.

``render_domain_xml(spec)`` is all the fleet manager needs: it fills one of the
two templates (``direct-kernel``: the self-test kernel+initramfs; ``disk``: a qcow2
overlay on a distro image plus a cloud-init seed) and checks the result parses.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import jinja2

from vexfs_cockpit.errors import ConfigError

METADATA_NS = "urn:vexfs-cockpit:domain:1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
TEMPLATES = ("direct-kernel", "disk")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_META_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def templates_dir() -> Path:
    """vm_templates/ beside the package (the repo root for an editable install)."""
    return Path(__file__).resolve().parents[2] / "vm_templates"


@dataclass(frozen=True, slots=True)
class DomainSpec:
    name: str
    ssh_port: int  # host port on 127.0.0.1 forwarded to the guest's 22
    cmdline: str = ""  # kernel command line (direct kernel boot only)
    kernel: Path | None = None
    initrd: Path | None = None
    template: Literal["direct-kernel", "disk"] = "direct-kernel"
    accel: Literal["kvm", "qemu"] = "qemu"  # libvirt domain type; "qemu" = TCG
    memory_mb: int = 512
    cpus: int = 1
    # disk template
    overlay: Path | None = None  # qcow2 overlay backed by the base image
    seed_iso: Path | None = None  # cloud-init NoCloud seed (volume label "cidata")
    disk_cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] = "none"
    disk_io: Literal["native", "threads", "io_uring"] = "threads"
    enable_hugepages: bool = False
    # No route from the guest to the host or beyond; the SSH forward still works.
    net_restrict: bool = True
    # Rendered under <metadata><vc:cockpit xmlns:vc=METADATA_NS>: owner pid/host, run id...
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def netdev_arg(self) -> str:
        restrict = ",restrict=on" if self.net_restrict else ""
        return f"user,id=n0{restrict},hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"VM name {self.name!r} is not a valid libvirt name: use letters, digits, '.', '_', '-'")
        if not 1024 <= self.ssh_port <= 65535:
            raise ConfigError(f"VM {self.name}: ssh_port {self.ssh_port} is out of range 1024-65535")
        if self.accel not in ("kvm", "qemu"):
            raise ConfigError(f"VM {self.name}: accel must be 'kvm' or 'qemu' (TCG), not {self.accel!r}")
        if self.memory_mb < 64 or self.cpus < 1:
            raise ConfigError(f"VM {self.name}: memory_mb >= 64 and cpus >= 1 required")
        if self.template == "direct-kernel" and (self.kernel is None or self.initrd is None):
            raise ConfigError(f"VM {self.name}: direct-kernel needs kernel and initrd (run `vexfs-cockpit image build`)")
        if self.template == "disk":
            if self.overlay is None or self.seed_iso is None:
                raise ConfigError(f"VM {self.name}: the disk template needs an overlay and a seed ISO")
            if self.disk_io == "native" and self.disk_cache not in ("none", "directsync"):
                raise ConfigError(
                    f"VM {self.name}: fleet.disk_io=native needs fleet.disk_cache none or directsync (QEMU refuses otherwise)"
                )
        for key in self.metadata:
            if not _META_KEY_RE.match(key):
                raise ConfigError(f"VM {self.name}: metadata key {key!r} is not an XML name")


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,  # paths and command lines land in XML text and attributes
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_domain_xml(spec: DomainSpec) -> str:
    """The libvirt domain XML for ``spec``; raises ConfigError if it is invalid."""
    spec.validate()
    try:
        xml = _env().get_template(f"{spec.template}.xml.j2").render(spec=spec, metadata_ns=METADATA_NS)
    except jinja2.TemplateNotFound as err:
        raise ConfigError(f"VM template {err.name} not found in {templates_dir()}") from err
    try:
        ET.fromstring(xml)
    except ET.ParseError as err:  # a template bug, not a user error; still one line
        raise ConfigError(f"VM template {spec.template} rendered invalid XML for {spec.name}: {err}") from err
    return xml


def parse_metadata(domain_xml: str) -> dict[str, str]:
    """Our <metadata> entries from a domain's XML (as `dom.XMLDesc()` returns it)."""
    root = ET.fromstring(domain_xml)
    node = root.find(f"metadata/{{{METADATA_NS}}}cockpit")
    if node is None:
        return {}
    return {child.tag.split("}", 1)[1]: (child.text or "") for child in node}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the kernel picks it).

    Racy by nature: QEMU binds it a moment later. Callers that start several VMs
    at once should keep the ports they were handed distinct and retry on a bind error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
