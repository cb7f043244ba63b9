"""kbuild/kload/kunload/ktest: host builds and one-line errors without a VM; the whole
warm loop on a real dev VM (marked ``vm``)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vexfs_cockpit import cli
from vexfs_cockpit.app import kdev
from vexfs_cockpit.commands import kdev as kdev_cmd
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.errors import ConfigError, InfraError, UsageError
from vexfs_cockpit.fleet.attach import check_attachable
from vexfs_cockpit.fleet.libvirt import Owner, VmInfo

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "selftest_fs"


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds and VM state files go to a temp data dir, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _src_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "selftest_fs"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*", "__pycache__", "*.py"))
    return src


def _headers_for(kernel: str) -> bool:
    return (Path("/lib/modules") / kernel / "build" / "Makefile").exists()


def _guest_kernel() -> str:
    from vexfs_cockpit.images.initramfs import resolve_kernel_version

    return resolve_kernel_version(load_config(None, "test").fleet.guest_kernel)


# ----------------------------------------------------------------------------- no VM
def test_expand_tests_adds_dependencies_in_order() -> None:
    reg = discover_domains()
    items, added = kdev.expand_tests("kernel_module/module_load_basic", reg)
    assert items == ["kernel_module/module_build", "kernel_module/module_load_basic"]
    assert added == ["kernel_module/module_build"]
    items, added = kdev.expand_tests("kernel_module/module_build", reg)
    assert items == ["kernel_module/module_build"] and added == []
    with pytest.raises(UsageError, match="kernel_module has no test 'nope'; its tests: .*module_build"):
        kdev.expand_tests("kernel_module/nope", reg)
    with pytest.raises(UsageError, match="unknown domain 'nodomain'"):
        kdev.expand_tests("nodomain/x", reg)
    with pytest.raises(UsageError, match="expected DOMAIN/TEST"):
        kdev.expand_tests("kernel_module", reg)


def test_check_attachable_names_the_fix() -> None:
    uri = "qemu:///system"
    with pytest.raises(InfraError, match=r"no VM named vexfs-t-x-0 at qemu:///system — start one with `vexfs-cockpit vm start vexfs-t-x-0`"):
        check_attachable("vexfs-t-x-0", uri, None)
    dev = Owner.current(keep=True, ssh_port=4000)
    with pytest.raises(InfraError, match=r"is stopped, not running — `vexfs-cockpit vm reset vexfs-t-x-0`"):
        check_attachable("vexfs-t-x-0", uri, VmInfo("vexfs-t-x-0", "stopped", True, dev))
    with pytest.raises(InfraError, match=r"belongs to a cockpit run \(pid \d+, run r7\), not a dev VM"):
        check_attachable("vexfs-t-x-0", uri, VmInfo("vexfs-t-x-0", "running", False, Owner.current(run_id="r7")))
    with pytest.raises(InfraError, match="no cockpit metadata"):
        check_attachable("vexfs-t-x-0", uri, VmInfo("vexfs-t-x-0", "running", False, None))
    check_attachable("vexfs-t-x-0", uri, VmInfo("vexfs-t-x-0", "running", False, dev))  # a dev VM: fine


def _node(tmp_path: Path, *domains: tuple[str, str | None]) -> str:
    body = "".join(
        f"<domain type='test'><name>{n}</name><memory>65536</memory><os><type>hvm</type></os>"
        + (f"<metadata>{meta}</metadata>" if meta else "") + "</domain>"
        for n, meta in domains
    )
    node = tmp_path / "node.xml"
    node.write_text(f"<node>{body}</node>")
    return f"test://{node}"


@pytest.mark.parametrize("argv", [
    ["kload", "nope"], ["kunload", "nope"], ["ktest", "nope", "--tests", "kernel_module/module_build"],
    ["kbuild", "--vm", "nope"],
])
def test_unknown_vm_is_one_line_exit_3_and_records_no_run(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = _node(tmp_path)
    cmd, rest = argv[0], argv[1:]
    rc = cli.main([cmd, "--env", "test", "--uri", uri, *rest])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no VM named vexfs-test-nope-0" in err and "`vexfs-cockpit vm start vexfs-test-nope-0`" in err
    assert not Path(os.environ["VEXFS_COCKPIT_DB"]).exists()  # ktest stopped before a run was recorded


def test_a_run_owned_vm_is_not_attached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = _node(tmp_path, ("vexfs-test-ci-0", Owner.current(run_id="r1", ssh_port=4100).to_xml()))
    assert cli.main(["kload", "--env", "test", "--uri", uri, "ci"]) == 3
    err = capsys.readouterr().err
    assert "vexfs-test-ci-0 belongs to a cockpit run" in err and err.count("\n") == 1


def test_module_name_empty_is_a_config_error() -> None:
    cfg = load_config(None, "test", {"module.module_name": ""})
    with pytest.raises(ConfigError, match="module.module_name is empty"):
        kdev.module_of(cfg)


def test_kload_params_with_an_unbalanced_quote_is_one_line_before_any_vm(capsys: pytest.CaptureFixture[str]) -> None:
    # No libvirt node behind --uri: the words are checked before anything is attached.
    assert cli.main(["kload", "--env", "test", "--uri", "test:///nowhere", "--params", 'max_files="3', "dev"]) == 2
    err = capsys.readouterr().err
    assert err == "vexfs-cockpit: --params: insmod parameters as KEY=VALUE words: no closing quotation\n"


def test_kbuild_for_a_disk_template_needs_a_vm(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kbuild", "--env", "test", "--set", "fleet.template=disk"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`vexfs-cockpit kbuild --vm NAME`" in err


def test_missing_headers_one_line_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["kbuild", "--env", "test", "--set", "fleet.guest_kernel=9.9.9-nope"])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1
    assert "no kernel headers for 9.9.9-nope" in err and "apt-get install linux-headers-9.9.9-nope" in err


@pytest.fixture
def kernel() -> str:
    """The guest kernel the image boots; these host builds need its headers."""
    k = _guest_kernel()
    if not _headers_for(k):
        pytest.skip(f"no kernel headers for {k}: apt-get install linux-headers-{k}")
    return k


async def test_build_staleness_and_compiler_errors(tmp_path: Path, kernel: str) -> None:
    """A real host build: fresh until a source file changes; a broken source prints its errors."""
    src = _src_copy(tmp_path)
    cfg = load_config(None, "test", {"module.build_path": str(src)})
    mod = kdev.module_of(cfg)
    assert mod.src == src and mod.fresh_ko(kernel) is None
    out = io.StringIO()
    ko = await kdev.ensure_built(mod, kernel, out)
    assert ko is not None and ko == mod.built_ko(kernel) and ko.is_file()
    assert not ko.is_relative_to(src)  # never builds in the source tree
    text = out.getvalue()
    assert f"no build for {kernel} yet" in text and f"built vexfs_selftest.ko for {kernel}" in text
    assert mod.fresh_ko(kernel) == ko
    later = ko.stat().st_mtime + 5
    os.utime(src / "vexfs_selftest.c", (later, later))  # "edit" the source
    assert mod.fresh_ko(kernel) is None

    c = src / "vexfs_selftest.c"
    c.write_text(c.read_text() + "\nstatic int broken(void) { return undeclared_thing; }\n")
    out = io.StringIO()
    assert await kdev.ensure_built(mod, kernel, out) is None
    text = out.getvalue()
    assert f"build failed for {kernel}: vexfs_selftest.c:" in text
    assert "undeclared_thing" in text and "undeclared (first use" in text  # gcc's own words, first error
    log_line = next(ln for ln in text.splitlines() if ln.startswith("full log: "))
    assert "undeclared_thing" in Path(log_line.removeprefix("full log: ")).read_text()


def test_kbuild_cli_exit_codes(tmp_path: Path, kernel: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = _src_copy(tmp_path)
    base = ["kbuild", "--env", "test", "--set", f"module.build_path={src}", "--set", f"fleet.guest_kernel={kernel}"]
    assert cli.main(base) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"built vexfs_selftest.ko for {kernel}") and out[1].endswith("vexfs_selftest.ko")
    (src / "vexfs_selftest.c").write_text("this is not C\n")
    assert cli.main(base) == 1
    out = capsys.readouterr().out
    assert "build failed" in out and "error:" in out


# ----------------------------------------------------------------------------- a real dev VM
@dataclass(frozen=True)
class DevVm:
    name: str
    xdg: Path  # XDG_DATA_HOME holding its state file (vms/<name>.json)


@pytest.fixture(scope="module")
def dev_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVm]:
    """One dev VM from `vm start` (state file in a temp data dir) for this module's tests."""
    from tests.conftest_vm import _check_host, vm_config
    from vexfs_cockpit.fleet.devvm import start_dev_vm, stop_vm

    cfg = vm_config()
    _check_host(cfg)
    if not _headers_for(_guest_kernel()):
        pytest.fail(f"no kernel headers for the guest kernel {_guest_kernel()}", pytrace=False)
    vm = DevVm(f"vexfs-test-kdev{os.getpid()}-0", tmp_path_factory.mktemp("kdev-xdg"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(vm.xdg))
        asyncio.run(start_dev_vm(cfg, vm.name, cfg.fleet.libvirt_uri, say=lambda _m: None))
        try:
            yield vm
        finally:
            asyncio.run(stop_vm(cfg, vm.name, cfg.fleet.libvirt_uri, force=True))


@pytest.fixture
def dev_data(dev_vm: DevVm, monkeypatch: pytest.MonkeyPatch) -> str:
    """The dev VM's name, with this test pointed at the data dir holding its state file."""
    monkeypatch.setenv("XDG_DATA_HOME", str(dev_vm.xdg))
    return dev_vm.name


async def _guest_sh(cfg, name: str, cmd: str) -> tuple[int | None, str]:
    from vexfs_cockpit.fleet.devvm import dev_target

    t = dev_target(cfg, name, None)
    try:
        r = await t.run(cmd, timeout=60)
    finally:
        await t.close()
    return r.exit_code, r.output


@pytest.mark.vm
async def test_kbuild_kload_mount_kunload(dev_data: str) -> None:
    name = dev_data
    cfg = load_config(None, "test")
    out = io.StringIO()
    assert await kdev.kbuild_cmd(cfg, name, out=out) == 0, out.getvalue()
    assert out.getvalue().startswith(f"built vexfs_selftest.ko for {_guest_kernel()}")

    out = io.StringIO()
    assert await kdev.kload(cfg, name, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "building" not in text  # the kbuild above is fresh: pushed as is
    assert "klog| " in text and "vexfs_selftest: loaded" in text  # from the serial console
    assert f"loaded vexfs_selftest into {name}" in text

    rc, got = await _guest_sh(cfg, name, "mkdir -p /mnt/kd && mount -t vexfs_selftest none /mnt/kd && "
                              "echo warm-loop > /mnt/kd/f && sync && cat /mnt/kd/f")
    assert rc == 0 and got.strip() == "warm-loop", got

    out = io.StringIO()
    assert await kdev.kload(cfg, name, out=out) == 1  # already loaded: says how to fix it
    assert f"`vexfs-cockpit kunload {name}` first" in out.getvalue()

    out = io.StringIO()
    assert await kdev.kunload(cfg, name, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "unmounted /mnt/kd (vexfs_selftest on none) first" in text
    assert "vexfs_selftest: unloaded" in text and f"unloaded vexfs_selftest from {name}" in text
    rc, got = await _guest_sh(cfg, name, "grep -c '^vexfs_selftest ' /proc/modules; grep -c vexfs_selftest /proc/mounts")
    assert got.split() == ["0", "0"], got

    out = io.StringIO()
    assert await kdev.kunload(cfg, name, out=out) == 0 and "not loaded" in out.getvalue()


@pytest.mark.vm
async def test_kload_reports_a_refused_load(dev_data: str) -> None:
    """The module rejects max_files=0 at init: kload must fail and show why."""
    name = dev_data
    cfg = load_config(None, "test")
    out = io.StringIO()
    assert await kdev.kload(cfg, name, params="max_files=0", out=out) == 1, out.getvalue()
    assert "insmod vexfs_selftest failed:" in out.getvalue()
    rc, got = await _guest_sh(cfg, name, "grep -c '^vexfs_selftest ' /proc/modules")
    assert got.strip() == "0"


@pytest.mark.vm
async def test_ktest_runs_one_test_into_history(dev_data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vexfs_cockpit.store.history import History

    name = dev_data
    db = tmp_path / "h.db"
    args = argparse.Namespace(
        config=None, env="test", set=[], db=str(db), uri=None, name=name, domains=None,
        tests="kernel_module/module_load_basic", timeout=None, retries=None, junit=None, json=None, show_klog=False,
    )
    rc = await kdev_cmd.ktest(args)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "also running kernel_module/module_build" in out and "2 passed, 0 failed, 0 skipped" in out
    runs = History(db).list_runs()
    assert len(runs) == 1 and runs[0].status == "passed"
    rep = History(db).run_detail(runs[0].run_id)
    assert rep is not None
    dom = rep.domain("kernel_module")
    assert dom is not None and dom.vm == name  # ran on the dev VM, no VM was booted
    assert {t.name: t.status.value for t in dom.tests} == {"module_build": "PASSED", "module_load_basic": "PASSED"}
    load = next(t for t in dom.tests if t.name == "module_load_basic")
    assert any("insmod" in c.cmd for c in load.evidence.commands)
    assert any("vexfs_selftest" in ln for ln in load.evidence.kernel_log)  # the console window was attached
    # the dev VM is still up afterwards
    rc2, got = await _guest_sh(load_config(None, "test"), name, "echo up")
    assert rc2 == 0 and got.strip() == "up"


@pytest.mark.vm
async def test_attached_reset_keeps_the_dev_vm(dev_data: str) -> None:
    """A reset through the attached lease (what the runner does after a crash) brings the
    VM back, and closing the provider leaves it running: it is the developer's VM."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.fleet.attach import AttachProvider
    from vexfs_cockpit.fleet.devvm import connect_fleet

    name = dev_data
    cfg = load_config(None, "test")
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = AttachProvider(cfg, bus, name)
    try:
        async with provider.lease("kernel_module", 0) as lease:
            await lease.target.run("touch /tmp/before-reset", check=True)
            assert lease.vm is not None
            await lease.vm.reset("test: reset through the attached lease")
            res = await lease.target.run("test -e /tmp/before-reset && echo kept || echo fresh")
            assert res.output.strip() == "fresh"  # really rebooted (the initramfs /tmp is new)
            since = lease.klog.cursor()
            assert await lease.klog.sync(lease.target, "after reset") >= since  # console re-attached
    finally:
        await provider.aclose()
    fm = await connect_fleet(cfg.fleet.libvirt_uri, cfg.env)
    try:
        info = await fm.info(name)
    finally:
        await fm.aclose()
    assert info is not None and info.state == "running" and info.owner is not None and info.owner.keep
    rc, got = await _guest_sh(cfg, name, "echo up")
    assert rc == 0 and got.strip() == "up"


@pytest.mark.vm
def test_warm_loop_through_the_kdev_agent(dev_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands as a developer types them: separate processes, served by one warm
    agent — same output as in-process, and a .ko already in the guest is not sent again."""
    import subprocess
    import sys

    from vexfs_cockpit.agent import client

    name = dev_data
    monkeypatch.setenv("VEXFS_KDEV_AGENT", "1")
    monkeypatch.setenv("VEXFS_KDEV_AGENT_DIR", str(tmp_path / "agent"))

    def cli_proc(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vexfs_cockpit", *argv, "--env", "test"], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)

    try:
        res = cli_proc("kunload", name)  # whatever an earlier test left
        assert res.returncode == 0, res.stdout + res.stderr
        res = cli_proc("kload", name)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "vexfs_selftest: loaded" in res.stdout and f"loaded vexfs_selftest into {name}" in res.stdout
        res = cli_proc("kunload", name)
        assert res.returncode == 0 and f"unloaded vexfs_selftest from {name}" in res.stdout, res.stdout + res.stderr
        res = cli_proc("ktest", name, "--tests", "kernel_module/module_load_basic")
        assert res.returncode == 0 and "2 passed, 0 failed, 0 skipped" in res.stdout, res.stdout + res.stderr
        status = client.control("status")
        assert status is not None and status["requests"] == 4  # all four through one agent
        # One SSH connection for the commands (and one for ktest's heartbeat), kept between them.
        assert status["ssh"]["made"] <= 2 and status["ssh"]["lent"] >= 4, status
        # A VM reset (another process) starts a new instance: the agent connects to it anew.
        res = cli_proc("vm", "reset", name)
        assert res.returncode == 0, res.stdout + res.stderr
        res = cli_proc("kunload", name)
        assert res.returncode == 0 and "is not loaded" in res.stdout, res.stdout + res.stderr
        after = client.control("status")
        # both of its kept targets (commands, heartbeat) are made anew for the new instance
        assert after is not None and after["ssh"]["made"] == status["ssh"]["made"] + 2, after
    finally:
        client.control("stop")
    db = Path(os.environ["VEXFS_COCKPIT_DB"])
    from vexfs_cockpit.store.history import History

    rep = History(db).run_detail(History(db).list_runs()[0].run_id)
    assert rep is not None
    build = next(t for t in rep.domain("kernel_module").tests if t.name == "module_build")
    cmds = [c.cmd for c in build.evidence.commands]
    # kload pushed this very .ko: module_build checked its digest and did not copy it again
    assert any("sha256sum" in c for c in cmds) and not any(c.startswith("put ") for c in cmds), cmds


async def test_kbuild_is_incremental_and_forgets_deleted_files(tmp_path: Path, kernel: str) -> None:
    """The warm loop's kbuild keeps objects like make in one's own tree: an untouched source
    is not recompiled, an edited one is, and a header deleted from the source is gone from
    the build too (a recompile fails instead of finding the old copy)."""
    src = _src_copy(tmp_path)
    cfg = load_config(None, "test", {"module.build_path": str(src)})
    mod = kdev.module_of(cfg)
    (src / "extra.h").write_text("#define VEXFS_BENCH_EXTRA 1\n")
    c = src / "vexfs_selftest.c"
    c.write_text('#include "extra.h"\n' + c.read_text())
    first = await kdev.build(mod, kernel)
    assert first.ok, first.output
    obj = first.build_dir / "vexfs_selftest.o"
    built_at = obj.stat().st_mtime_ns

    again = await kdev.build(mod, kernel)  # nothing changed: make relinks nothing it need not
    assert again.ok and obj.stat().st_mtime_ns == built_at, again.output

    # An edit a microsecond after the build: whole-second mtimes in the copy would hide it.
    os.utime(c, ns=(built_at + 1000, built_at + 1000))
    edited = await kdev.build(mod, kernel)
    assert edited.ok and obj.stat().st_mtime_ns > built_at, edited.output

    (src / "extra.h").unlink()
    rebuilt_at = obj.stat().st_mtime_ns
    os.utime(c, ns=(rebuilt_at + 1000, rebuilt_at + 1000))  # recompiled: the old copy must not be found
    gone = await kdev.build(mod, kernel)
    assert not gone.ok and not (gone.build_dir / "extra.h").exists()
    assert any("extra.h" in e for e in gone.errors), gone.errors


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_watch_rebuilds_reloads_and_reruns_on_each_save(dev_data: str, tmp_path: Path) -> None:
    """`watch`: a save is one result line (build, reload, the named tests on the dev VM);
    the first builds with make, the next replays kbuild's records (the fast path) and
    that very .ko is what the guest loaded and passed with; a save that breaks the build
    says so in that line (make's errors); it stops after --max-cycles."""
    import queue
    import subprocess
    import sys
    import threading
    import time

    src = _src_copy(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vexfs_cockpit", "watch", "--env", "test", "--set", f"module.build_path={src}",
         "--db", str(tmp_path / "h.db"), "--tests", "kernel_module/module_load_basic", "--debounce-ms", "100",
         "--max-cycles", "3", dev_data],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(ln.rstrip("\n")) for ln in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []

    def wait_for(text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout:g}s:\n" + "\n".join(seen[-20:]))

    try:
        wait_for("watching ", 60)
        source = src / "vexfs_selftest.c"
        source.write_text(source.read_text() + "\n/* a save */\n")
        ok = wait_for("save 1:", 300)
        assert "PASS 2/2" in ok, ok  # module_build comes along as module_load_basic's dependency
        # where the save's time went; the build and the unload run side by side
        took = r"build [\d.]+ (?P<how>[^,]+), unload [\d.]+ alongside · tests [\d.]+ · load [\d.]+\)"
        m = re.search(took, ok)
        assert m and m["how"] == "make: first build here", ok
        source.write_text(source.read_text() + '\nstatic const char vexfs_watch_tag[] __used = "vexfs-watch-fast-2";\n')
        fast = wait_for("save 2:", 300)
        m = re.search(took, fast)
        assert "PASS 2/2" in fast and m and m["how"] == "fast", fast
        cfg = load_config(None, "test", {"module.build_path": str(src)})
        ko = kdev.module_of(cfg).built_ko(_guest_kernel())
        digest = hashlib.sha256(ko.read_bytes()).hexdigest()
        assert b"vexfs-watch-fast-2" in ko.read_bytes()
        rc, got = asyncio.run(_guest_sh(cfg, dev_data, "sha256sum /tmp/vexfs-cockpit/vexfs_selftest.ko"))
        assert rc == 0 and got.split()[0] == digest, got  # the guest loaded the replayed build...
        rc, got = asyncio.run(_guest_sh(cfg, dev_data, "grep -c '^vexfs_selftest ' /proc/modules"))
        assert got.strip() == "1", got  # ...and it stays loaded after the save's tests
        source.write_text(source.read_text() + "\nint vexfs_watch_broken = ;\n")
        broken = wait_for("save 3:", 300)
        assert "build FAILED" in broken and "error" in broken, broken
        assert "make: CC [M] vexfs_selftest.o exited 1" in broken, broken  # replay failed: make's errors
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bisect_search_pins_the_first_bad_commit_around_skips() -> None:
    from vexfs_cockpit.commands.bisect import first_bad, next_to_test

    commits = ["c0", "c1", "c2", "c3", "c4", "c5"]
    verdict = {"c0": "good", "c5": "bad"}
    assert first_bad(commits, verdict) == (None, ["c1", "c2", "c3", "c4"])
    assert next_to_test(commits, verdict) in ("c2", "c3")
    verdict |= {"c2": "skip", "c3": "bad", "c1": "good"}
    assert first_bad(commits, verdict) == (None, ["c2"])  # c2 only skipped: c2 or c3 is the first bad
    assert next_to_test(commits, verdict) is None  # nothing left to try: said, not looped on
    verdict["c2"] = "good"
    assert first_bad(commits, verdict) == ("c3", [])
    assert next_to_test(commits, verdict) is None


def _git(repo: Path, *argv: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_bisect_finds_the_commit_that_planted_a_fault(dev_data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A generated history of the fixture module: c2 does not build (skipped), c3 builds
    again, c4 plants a fault in module init, c5 is harmless. bisect c0 c5 names c4."""
    src = _src_copy(tmp_path)
    repo = src.parent
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    source = src / "vexfs_selftest.c"
    clean = source.read_text()

    def commit(text: str, msg: str) -> str:
        source.write_text(text)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", msg)
        return _git(repo, "rev-parse", "HEAD")

    c0 = commit(clean, "c0 the fixture")
    commit(clean + "\n/* c1 */\n", "c1 a comment")
    commit(clean + "\n/* c1 */\nint vexfs_bisect_broken = ;\n", "c2 does not build")
    commit(clean + "\n/* c1 */\n/* c3 */\n", "c3 builds again")
    planted = clean.replace("\tint err = vst_cache_alloc();\n",
                            "\tint err = vst_cache_alloc();\n\n\tif (!err) {\n\t\tvst_cache_free();\n\t\treturn -EINVAL;\n\t}\n", 1)
    assert planted != clean
    c4 = commit(planted + "\n/* c1 */\n/* c3 */\n", "c4 plants a fault")
    c5 = commit(planted + "\n/* c1 */\n/* c3 */\n/* c5 */\n", "c5 a comment")

    rc = cli.main(["bisect", "--env", "test", "--set", f"module.build_path={src}", "--db", str(tmp_path / "h.db"),
                   "--test", "kernel_module/module_load_basic", c0, c5, dev_data])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"first bad commit: {c4} c4 plants a fault" in out, out
    assert " skip " in out and "c2 does not build" in out  # tried first (the middle), skipped
    run_id = out.split("its run: ", 1)[1].split()[0]
    from vexfs_cockpit.store.history import History

    detail = History(tmp_path / "h.db").run_detail(run_id)
    assert detail is not None
    failed = [t for t in detail.tests() if t.name == "module_load_basic"]
    assert failed and str(failed[0].status) == "FAILED"
