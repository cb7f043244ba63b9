"""A guest's `uname -r` never steers the host's rm -rf: every place that reads it checks
it (one line naming the VM and the answer), and kbuild keeps every directory it derives
from a kernel version inside its base, whatever the version says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vexfs_cockpit.builds.kbuild import kbuild
from vexfs_cockpit.config.models import CockpitConfig, FleetSettings
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.guest_input import is_kernel_release, kernel_release
from vexfs_cockpit.engine.target import CommandResult
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.fleet import attach as attach_mod
from vexfs_cockpit.fleet import provider as provider_mod
from vexfs_cockpit.fleet.libvirt import Owner, VmInfo
from vexfs_cockpit.transport.local import LocalTarget

HOSTILE = (
    "6.1.0-57-amd64/../../../../tmp/x",
    "../../../etc",
    "/etc",
    "..",
    ".",
    "6.1.0 -57",
    "6.1.0\nrm -rf /",
    "6.1.0;reboot",
    "$(reboot)",
    "",
    "-rf",
    "x" * 200,
)


def test_the_pattern_takes_real_releases_only() -> None:
    for good in ("6.1.0-57-amd64", "6.12.9+bpo-cloud-amd64", "5.10.0~rc1", "4.19.0_custom", "6.1"):
        assert is_kernel_release(good), good
        assert kernel_release(good + "\n", "vm") == good
    for bad in HOSTILE + ("6.1..0",):
        assert not is_kernel_release(bad), bad


class LyingGuest:
    """A guest Target whose `uname -r` says what the test wants."""

    def __init__(self, answer: str, *, exit_code: int = 0):
        self.name = "liar"
        self.host, self.port, self.username = "127.0.0.1", 40022, "root"
        self.answer, self.exit_code = answer, exit_code
        self.commands: list[str] = []
        self.closed = False
        self.reconnect_deadline_s = 1.0

    async def run(self, cmd: Any, *, timeout: float = 60.0, input: Any = None, check: bool = False) -> CommandResult:
        self.commands.append(str(cmd))
        return CommandResult(str(cmd), self.exit_code, self.answer, 0.0)

    async def connect(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("answer", HOSTILE)
async def test_a_lying_guest_is_one_line_naming_vm_and_answer(answer: str) -> None:
    with pytest.raises(InfraError) as ei:
        await provider_mod.guest_kernel_release(LyingGuest(answer + "\n"), "vexfs-test-a-0")  # type: ignore[arg-type]
    msg = str(ei.value)
    assert "\n" not in msg and "VM vexfs-test-a-0" in msg and "not a kernel release" in msg
    assert repr(answer.strip()[:80]).rstrip("'") in msg


async def test_a_failed_uname_is_still_said_as_such() -> None:
    with pytest.raises(InfraError, match=r"VM v: `uname -r` failed: uname: not found"):
        await provider_mod.guest_kernel_release(LyingGuest("uname: not found", exit_code=127), "v")  # type: ignore[arg-type]
    assert await provider_mod.guest_kernel_release(LyingGuest("6.1.0-57-amd64\n"), "v") == "6.1.0-57-amd64"  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the lease paths
async def test_a_booted_vm_lease_refuses_a_lying_uname(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """LibvirtProvider.lease: the VM is booted (faked here), its guest lies; no lease is
    handed out, the VM is destroyed."""
    liar = LyingGuest("6.1.0-57-amd64/../../../../tmp/x\n")
    closed: list[str] = []

    class Console:
        log_path = tmp_path / "console.log"

    class Vm:
        name = "vexfs-test-kernel_module-0"
        target, ssh_port, console, keep, klog, boot_kind = liar, 40022, Console(), False, None, "cold"

        async def aclose(self, grace_s: float = 0) -> None:
            closed.append(self.name)

    class Watchdog:
        async def aclose(self) -> None:
            closed.append("watchdog")

    p = provider_mod.LibvirtProvider(CockpitConfig(env="test", fleet=FleetSettings()), EventBus(), tmp_path)

    async def free_name(domain: str, index: int, skip: frozenset[str] = frozenset()) -> str:
        return Vm.name

    async def boot_vm(name: str, **kw: Any) -> Vm:
        return Vm()

    async def prepare() -> object:
        return object()

    monkeypatch.setattr(p, "_free_name", free_name)
    monkeypatch.setattr(p, "boot_vm", boot_vm)
    monkeypatch.setattr(p, "_prepare", prepare)
    monkeypatch.setattr(p, "_make_target", lambda *a: liar)
    monkeypatch.setattr(provider_mod, "guest_watchdog", lambda *a, **kw: Watchdog())
    with pytest.raises(InfraError) as ei:
        async with p.lease("kernel_module", 0):
            pytest.fail("a lease for a guest that lies about its kernel")
    assert "\n" not in str(ei.value)
    assert "VM vexfs-test-kernel_module-0" in str(ei.value) and "../../../../tmp/x" in str(ei.value)
    assert liar.commands == ["uname -r"] and closed == ["watchdog", Vm.name]
    p._closed = True  # nothing was connected


async def test_an_attached_dev_vm_refuses_a_lying_uname(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AttachProvider (kload/kunload/ktest's lease): a disk dev VM is asked `uname -r`;
    a lie is one line, the console and SSH are let go."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    liar = LyingGuest("6.1.0-57-amd64/../../../../tmp/x\n")
    name = "vexfs-test-dev-0"
    events: list[str] = []

    class Console:
        lines_seen = 0
        log_path = None

        def __init__(self, *a: Any, **kw: Any) -> None:
            pass

        async def attach(self, note: str = "") -> None:
            events.append("console attached")

        async def aclose(self) -> None:
            events.append("console closed")

    async def nothing(*a: Any, **kw: Any) -> None:
        return None

    async def info(n: str) -> VmInfo:
        return VmInfo(n, "running", True, Owner.current(keep=True, ssh_port=liar.port))

    async def ssh_target(info: Any, role: str) -> LyingGuest:
        return liar

    p = attach_mod.AttachProvider(CockpitConfig(env="test", fleet=FleetSettings()), EventBus(), name,
                                  uri="test:///default")
    monkeypatch.setattr(p.fleet, "connect", nothing)
    monkeypatch.setattr(p.fleet, "info", info)
    monkeypatch.setattr(p, "_ssh_target", ssh_target)
    monkeypatch.setattr(attach_mod, "ConsoleStream", Console)
    monkeypatch.setattr(attach_mod, "booted_image", nothing)  # a disk guest: its kernel is asked
    with pytest.raises(InfraError) as ei:
        await p.attach()
    msg = str(ei.value)
    assert "\n" not in msg and f"VM {name}" in msg and "../../../../tmp/x" in msg and "not a kernel release" in msg
    assert liar.commands == ["uname -r"] and liar.closed and events == ["console attached", "console closed"]
    assert p._lease is None


# ----------------------------------------------------------------------------- kbuild itself
def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("incremental", [False, True])
@pytest.mark.parametrize("shape", ["climb", "absolute", "nested"])
async def test_kbuild_keeps_a_hostile_kernel_inside_its_base(tmp_path: Path, incremental: bool, shape: str) -> None:
    """kbuild called directly with a kernel version that climbs out of the build base (to
    a dir with a Makefile in build/, so the headers check passes): nothing outside the
    base is created or removed — not by rm -rf, not by the incremental prune."""
    src = tmp_path / "src" / "mod"
    src.mkdir(parents=True)
    (src / "mod.c").write_text("int x;\n")
    victim = tmp_path / "victim"
    (victim / "build").mkdir(parents=True)
    (victim / "build" / "Makefile").write_text("modules:\n\t@echo pwned > $(M)/pwned; touch $(M)/x.ko\n")
    (victim / "precious").write_text("keep me\n")
    base = tmp_path / "out"
    kernel = {
        "climb": "6.1.0-57-amd64" + "/.." * 40 + str(victim),  # headers: /lib/modules/../../victim
        "absolute": str(victim),
        "nested": "6.1.0-57-amd64/x",
    }[shape]
    outside_before = _tree(tmp_path)
    with pytest.raises(InfraError) as ei:
        await kbuild(src, kernel, base, LocalTarget("host"), incremental=incremental, reuse_cache=False)
    assert "\n" not in str(ei.value) and "refusing" in str(ei.value)
    assert (victim / "precious").read_text() == "keep me\n"
    assert not (victim / "pwned").exists() and not (victim / "mod.c").exists()
    assert _tree(tmp_path) == outside_before  # base not even created: nothing ran


async def test_kbuild_refuses_a_build_dir_that_is_a_planted_symlink(tmp_path: Path) -> None:
    """The derived dir must be a real child of the base: a symlink there (to a victim) is
    not followed by rm -rf's mkdir/tar or by the prune."""
    kernel = next((p.parent.parent.name for p in sorted(Path("/lib/modules").glob("*/build/Makefile"))), None)
    if kernel is None:
        pytest.skip("no kernel headers in /lib/modules")
    src = tmp_path / "src" / "mod"
    src.mkdir(parents=True)
    (src / "mod.c").write_text("int x;\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    base = tmp_path / "out"
    base.mkdir()
    (base / f"mod-{kernel}").symlink_to(victim)
    with pytest.raises(InfraError, match="refusing"):
        await kbuild(src, kernel, base, LocalTarget("host"), incremental=True, reuse_cache=False)
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
