"""Kernel fitness: a config lacking what a test guest needs is named option by option."""

from __future__ import annotations

from pathlib import Path

import pytest

from vexfs_cockpit import cli
from vexfs_cockpit.images.kconfig import NEEDS, fragment, missing, read_kconfig

INSTALLED = sorted(Path("/boot").glob("config-*"))


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".config"
    path.write_text(text)
    return path


def test_the_fragment_satisfies_every_need(tmp_path: Path) -> None:
    assert missing(read_kconfig(_config(tmp_path, fragment()))) == []


def test_a_missing_or_modular_option_is_named_with_why(tmp_path: Path) -> None:
    text = fragment().replace("CONFIG_MAGIC_SYSRQ=y", "# CONFIG_MAGIC_SYSRQ is not set")
    text = text.replace("CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_SERIAL_8250_CONSOLE=m")
    text = text.replace("CONFIG_E1000=y", "CONFIG_E1000=m")  # modular is fine: the initramfs loads it
    gaps = {need.option: have for need, have in missing(read_kconfig(_config(tmp_path, text)))}
    assert gaps == {"CONFIG_MAGIC_SYSRQ": "not set", "CONFIG_SERIAL_8250_CONSOLE": "=m"}


def test_kernel_config_check_exits_1_on_a_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, fragment().replace("CONFIG_DETECT_HUNG_TASK=y\n", ""))
    assert cli.main(["kernel", "config", "--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "CONFIG_DETECT_HUNG_TASK not set: hung-task reports end a hanging test" in out
    assert cli.main(["kernel", "config", "--check", str(tmp_path / "nope")]) == 2
    (tmp_path / "tree").mkdir()
    assert cli.main(["kernel", "config", "--check", str(tmp_path / "tree")]) == 2
    assert "a directory without a .config" in capsys.readouterr().err


@pytest.mark.skipif(not INSTALLED, reason="no /boot/config-*")
def test_the_installed_debian_kernel_is_fit() -> None:
    # Debian's kernel is what the self-test guest boots: it must pass its own check.
    assert missing(read_kconfig(INSTALLED[0])) == [] and len(NEEDS) >= 10
