"""The console log on disk is bounded: a flood rotates, it never grows without end."""

from __future__ import annotations

from pathlib import Path

from vexfs_cockpit.fleet.console_log import ConsoleLog


def _total(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir())


def test_a_flood_costs_at_most_keep_plus_one_files(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "vm.log", max_bytes=1000, keep=2)
    line = b"[  1.0] vexfs: flood line that a broken module prints forever\n"
    for _ in range(10_000):
        log.write(line)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["vm.log", "vm.log.1", "vm.log.2"]
    assert _total(tmp_path) <= 3 * 1000
    assert (tmp_path / "vm.log").read_bytes().endswith(line)  # the newest lines are kept


def test_a_reused_log_counts_what_is_there_already(tmp_path: Path) -> None:
    path = tmp_path / "dev.console.log"
    path.write_bytes(b"x" * 900)  # an earlier boot's console
    log = ConsoleLog(path, max_bytes=1000, keep=1)
    log.write(b"y" * 200)
    log.close()
    assert (tmp_path / "dev.console.log.1").read_bytes() == b"x" * 900
    assert path.read_bytes() == b"y" * 200


def test_the_log_is_private_and_not_followed_through_a_symlink(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "vm.log")
    log.write(b"line\n")
    log.close()
    assert (tmp_path / "vm.log").stat().st_mode & 0o777 == 0o600
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / "link.log").symlink_to(target)
    try:
        ConsoleLog(tmp_path / "link.log")
    except OSError:
        pass
    else:
        raise AssertionError("a symlinked console log was followed")
