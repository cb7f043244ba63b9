"""Hosts of a chosen size for libvirt's daemon-less test driver (placement and host-health tests)."""

from __future__ import annotations

from pathlib import Path


def node_xml(path: Path, cpus: int, memory_mb: int) -> str:
    """A libvirt test-driver host of that size (drvtest: <node> with <cpu> and <memory> KiB);
    returns its ``test://`` URI."""
    path.write_text(
        "<node>\n"
        f"  <cpu><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>"
        f"<active>{cpus}</active><mhz>2000</mhz><model>x86_64</model></cpu>\n"
        f"  <memory>{memory_mb * 1024}</memory>\n"
        "</node>\n"
    )
    return f"test://{path}"
