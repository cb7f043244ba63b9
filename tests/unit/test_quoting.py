"""Config values pasted into guest shell commands arrive as one word each, unchanged.

The config refuses hostile names (tests/unit/test_config.py), and every command builder
quotes anyway: these property tests feed hostile strings (quotes, ``;``, ``$(...)``,
backticks, newlines, globs, leading dashes, any unicode but NUL) straight into each
builder, bypassing the config, and check the built command two ways:

- parsed as a shell parses words (shlex, POSIX mode, with shell punctuation): the
  command built with hostile values has exactly the words of the command built with
  plain placeholders, each placeholder replaced by its value — nothing split, joined,
  dropped or added;
- run by the local ``sh`` where that touches nothing outside a temp directory: files
  land at exactly the hostile path, ``printf`` prints exactly the value, and an
  injected ``touch`` never runs.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from domains._vectors import fuse_search_cmd, fuse_write_cmd, shard_count_cmd
from vexfs_cockpit.engine.module import (
    GUEST_DIR,
    cleanup_cmd,
    detach_cmd,
    image_cmd,
    insmod_argv,
    is_loaded_cmd,
    kmsg_marked_cmd,
    module_state_cmd,
    mount_argv,
    push_probe_cmd,
    registered_cmd,
    sysfs_params_cmd,
    sysfs_state_cmd,
    unload_cmd,
    write_cmd,
)
from vexfs_cockpit.config.models import split_module_params
from vexfs_cockpit.engine.target import render_command

ATTACKS = [
    "x' /dev/null; touch /tmp/p; echo '",
    "x'; touch /tmp/p",
    "$(touch /tmp/p)",
    "`touch /tmp/p`",
    "a b",
    "-rf",
    "'",
    '"',
    "\\",
    "a\nb",
    "\n",
    "*",
    "~root",
    "#comment",
    "a;b&&c||d|e>f<g",
    "${IFS}",
    "$HOME",
    "'\"'\"'",
    "é\t\r",
]
# Anything a string can hold but NUL (no argv word can) and lone surrogates (no encoding).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)
HOSTILE = st.one_of(st.sampled_from(ATTACKS), TEXT)
# One path component (a .ko name, a directory name): no "/", not "." or "..".
COMPONENT = HOSTILE.filter(lambda s: "/" not in s and s not in (".", ".."))

PLACEHOLDER = "Vx9p{}z"  # plain word: shlex.quote leaves it bare


def shell_words(cmd: str) -> list[str]:
    """The words of ``cmd`` as sh splits them (operators such as ``;``, ``&&``, ``>`` are
    words of their own; quotes removed)."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lex.whitespace_split = True  # any non-operator character continues a word, as in sh
    lex.commenters = ""  # our commands carry no comments; shlex would also cut "a#b"
    return list(lex)


@dataclass(frozen=True)
class Builder:
    name: str
    build: Callable[..., str]
    values: tuple[st.SearchStrategy[str], ...]


BUILDERS = [
    Builder("is_loaded_cmd", is_loaded_cmd, (HOSTILE,)),
    Builder("registered_cmd", registered_cmd, (HOSTILE, HOSTILE)),
    Builder("unload_cmd", unload_cmd, (HOSTILE, HOSTILE)),
    Builder("cleanup_cmd", cleanup_cmd, (HOSTILE, HOSTILE, HOSTILE)),
    Builder("push_probe_cmd", lambda ko: push_probe_cmd(f"{GUEST_DIR}/{ko}"), (COMPONENT,)),
    Builder("module_state_cmd", lambda name, ko: module_state_cmd(name, f"{GUEST_DIR}/{ko}"), (HOSTILE, COMPONENT)),
    Builder("image_cmd", lambda img: image_cmd(img, 64), (HOSTILE,)),
    Builder("detach_cmd", detach_cmd, (HOSTILE, HOSTILE)),
    Builder("write_cmd", write_cmd, (HOSTILE, HOSTILE)),
    Builder("write_cmd background", lambda p, v: write_cmd(p, v, background=True), (HOSTILE, HOSTILE)),
    Builder("sysfs_state_cmd", sysfs_state_cmd, (HOSTILE,)),
    Builder("sysfs_params_cmd", sysfs_params_cmd, (HOSTILE,)),
    Builder(
        "kmsg_marked_cmd",
        lambda ko, param, begin, end: kmsg_marked_cmd(insmod_argv(ko, [param]), begin, end),
        (HOSTILE, HOSTILE, HOSTILE, HOSTILE),
    ),
    Builder("shard_count_cmd", shard_count_cmd, (HOSTILE,)),
    Builder("fuse_write_cmd", fuse_write_cmd, (HOSTILE,)),
    Builder("fuse_search_cmd", lambda d, query: fuse_search_cmd(d, query, 10), (HOSTILE, HOSTILE)),
]


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.name)
@given(data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_each_value_is_one_word_unchanged(builder: Builder, data: st.DataObject) -> None:
    values = [data.draw(s, label=f"value {i}") for i, s in enumerate(builder.values)]
    assume(not any("Vx9p" in v for v in values))
    holders = [PLACEHOLDER.format(i) for i in range(len(values))]
    expected = shell_words(builder.build(*holders))
    for holder, value in zip(holders, values):
        expected = [w.replace(holder, value) for w in expected]
    built = builder.build(*values)
    assert shell_words(built) == expected, built


@given(remote=HOSTILE, params=st.lists(HOSTILE, max_size=4), fs=HOSTILE, src=HOSTILE, mp=HOSTILE, opts=HOSTILE)
@settings(max_examples=200, deadline=None)
def test_argv_builders_round_trip_through_the_shell_text(
    remote: str, params: list[str], fs: str, src: str, mp: str, opts: str
) -> None:
    """A list command is sent as ``shlex.join`` of its words (engine/target.render_command)."""
    for argv in (insmod_argv(remote, params), mount_argv(fs, src, mp, opts), mount_argv(fs, src, mp)):
        assert shlex.split(render_command(argv)) == argv
    assert insmod_argv(remote, params) == ["insmod", remote, *params]
    assert mount_argv(fs, src, mp, opts) == ["mount", "-t", fs, "-o", opts, src, mp]


@given(value=HOSTILE.filter(lambda s: not any(c in s for c in "\n\r")))
@example(value="x y")
@example(value="a=1 b=2")
@settings(max_examples=200, deadline=None)
def test_a_quoted_module_parameter_value_is_one_word(value: str) -> None:
    assert split_module_params(f"debug a=1 name={shlex.quote(value)}") == ("debug", "a=1", f"name={value}")


@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
@example(text='a="b')
@example(text="a=1; reboot")
@example(text="a=1 $(reboot)")
@settings(max_examples=300, deadline=None)
def test_module_params_are_parameter_words_or_an_error(text: str) -> None:
    """Any module_params text either splits into KEY / KEY=VALUE words (each then one
    insmod argument) or raises ValueError with one line: never a traceback elsewhere."""
    try:
        words = split_module_params(text)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    for w in words:
        key = w.split("=", 1)[0]
        assert key and not key.startswith("-") and all(c.isascii() and (c.isalnum() or c in "_.-") for c in key), w
        assert not any(c in w for c in "\x00\n\r"), w
    assert shlex.split(render_command(insmod_argv("/tmp/m.ko", words))) == ["insmod", "/tmp/m.ko", *words]


# -- the local shell: only commands that touch nothing outside a temp directory ----------
def sh(cmd: str, *, input: str | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Bytes in and out: text mode would turn a "\r\n" in the output into "\n".
    res = subprocess.run(["sh", "-c", cmd], input=None if input is None else input.encode(),
                         capture_output=True, cwd=cwd, timeout=30)
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def _dir(tmp: Path, name: str) -> Path:
    d = tmp / f"c{abs(hash(name))}"
    d.mkdir(exist_ok=True)
    return d


SHELL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(name=COMPONENT, query=HOSTILE)
@SHELL
def test_fuse_commands_write_and_read_exactly_there(tmp_path: Path, name: str, query: str) -> None:
    assume(len(name.encode()) <= 200)
    directory = _dir(tmp_path, name) / name
    (directory / "_vexfs").mkdir(parents=True, exist_ok=True)
    res = sh(fuse_write_cmd(f"{directory}/7.vec"), input="1,2,3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (directory / "7.vec").read_text() == "1,2,3"
    res = sh(fuse_search_cmd(str(directory), query, 5), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"vector: {query}\nk: 5\n"
    count = sh(shard_count_cmd(str(directory)), cwd=tmp_path)
    assert count.stdout.strip() == "0"  # 7.vec and _vexfs: no shard there, and the ls found the dir


@given(name=COMPONENT, value=HOSTILE)
@SHELL
def test_write_and_image_commands_land_at_exactly_that_path(tmp_path: Path, name: str, value: str) -> None:
    assume(len(name.encode()) <= 200)
    d = _dir(tmp_path, name)
    assert sh(write_cmd(str(d / name), value), cwd=tmp_path).returncode == 0
    assert (d / name).read_bytes() == value.encode() + b"\n"
    img = d / f"{name}.img"
    res = sh(image_cmd(str(img), 1), cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    assert img.stat().st_size == 1024 * 1024
    assert sorted(p.name for p in d.iterdir()) == sorted({name, f"{name}.img"})


@pytest.mark.parametrize(
    "build",
    [is_loaded_cmd, lambda v: registered_cmd(v, v), sysfs_state_cmd, sysfs_params_cmd, shard_count_cmd],
    ids=["is_loaded_cmd", "registered_cmd", "sysfs_state_cmd", "sysfs_params_cmd", "shard_count_cmd"],
)
def test_an_injected_command_never_runs(tmp_path: Path, build: Callable[[str], str]) -> None:
    """Read-only commands, run by the local sh with values that try to break out."""
    canary = tmp_path / "pwned"
    for attack in (f"x' /dev/null; touch {canary}; echo '", f"$(touch {canary})", f"`touch {canary}`",
                   f"x\ntouch {canary}", f"x'\"; touch {canary} #", f"; touch {canary}"):
        sh(build(attack), cwd=tmp_path)
        assert not canary.exists(), f"{attack!r} ran touch through {build(attack)!r}"


def test_the_word_splitter_sees_an_unquoted_value() -> None:
    """The check above is only as good as shell_words: it must tell a quoted value from a
    pasted one."""
    value = "x' /dev/null; touch /tmp/p; echo '"
    pasted = f"grep -q '^{value} ' /proc/modules"
    quoted = is_loaded_cmd(value)
    assert shell_words(quoted) == ["grep", "-q", f"^{value} ", "/proc/modules"]
    assert shell_words(pasted) != shell_words(quoted)
    assert ";" in shell_words(pasted) and "touch" in shell_words(pasted)
