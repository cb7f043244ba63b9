"""The public plugin API: one module a domain imports (``vexfs_cockpit.plugin``, also
served lazily by ``vexfs_cockpit``), and one model of the module under test that the
domains and the warm loop share."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

import vexfs_cockpit
from vexfs_cockpit import plugin
from vexfs_cockpit.app import kdev
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.config.models import DOMAIN_NAMES
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.module import GUEST_DIR, LoopImage, ModuleSpec
from vexfs_cockpit.transport.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]


def test_the_package_serves_exactly_the_public_api() -> None:
    assert sorted(vexfs_cockpit._API) == sorted(plugin.__all__)
    for name in plugin.__all__:
        assert getattr(vexfs_cockpit, name) is getattr(plugin, name), name
    with pytest.raises(AttributeError):
        vexfs_cockpit.runner  # noqa: B018  # internals are not served


def test_naming_the_package_loads_no_engine() -> None:
    code = "import sys, vexfs_cockpit; print(sorted(m for m in sys.modules if m.startswith('vexfs_cockpit.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _contract(name_start: str) -> dict:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return next(c for c in data["tool"]["importlinter"]["contracts"] if c["name"].startswith(name_start))


def test_the_domains_contract_forbids_every_module_but_the_api() -> None:
    """A module added to vexfs_cockpit later is forbidden to domains too (or this fails)."""
    contract = _contract("Domains import only the public plugin API")
    top = {f"vexfs_cockpit.{m.name}" for m in pkgutil.iter_modules(vexfs_cockpit.__path__)}
    assert set(contract["forbidden_modules"]) == top - {"vexfs_cockpit.plugin"}
    assert "ignore_imports" not in contract


def test_domains_import_from_vexfs_cockpit_only_the_api() -> None:
    """What the import-linter contract holds, in the test run too."""
    graph = grimp.build_graph("vexfs_cockpit", "domains", exclude_type_checking_imports=False)
    bad = {
        (m, d)
        for m in graph.find_descendants("domains") | {"domains"}
        for d in graph.find_modules_directly_imported_by(m)
        if d.startswith("vexfs_cockpit") and d not in ("vexfs_cockpit", "vexfs_cockpit.plugin")
    }
    assert bad == set()


def _readme_domain() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("Your own domain")
    return re.search(r"```python\n(.*?)```", text[start:], re.S)[1]  # type: ignore[index]


async def test_the_readme_domain_uses_only_the_api_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _readme_domain()
    imports = re.findall(r"^(?:from|import) (\S+)", source, re.M)
    assert set(imports) <= {"vexfs_cockpit", "vexfs_cockpit.plugin"}, imports
    pkg = tmp_path / "readme_domains"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "custom.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cls = discover_domains("readme_domains")["custom"]
        assert [t.name for t in cls.discover_tests()] == ["custom_functionality", "registered"]
        settings = load_config(None, "test").domain("kernel_module").model_dump()
        ctx = plugin.DomainContext(name="custom", settings=settings, target=LocalTarget("host"))
        result = await cls(ctx).test_registered()
        assert isinstance(result, plugin.TestResult) and result.status in (plugin.TestStatus.PASSED, plugin.TestStatus.FAILED)
    finally:
        sys.modules.pop("readme_domains.custom", None)
        sys.modules.pop("readme_domains", None)


# -- one model of the module under test --------------------------------------------------
def test_the_warm_loop_and_the_domains_read_the_same_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config(None, "test", {"module.module_params": "max_files=7 name='a b'"})
    warm = kdev.module_of(cfg)
    for domain in DOMAIN_NAMES:
        ctx = plugin.DomainContext(name=domain, settings=cfg.domain(domain).model_dump(), target=LocalTarget("h"),
                                   config=cfg)
        assert ctx.module() == warm, domain
    assert warm == ModuleSpec(
        name="vexfs_selftest", fs_type="vexfs_selftest", ko_name="vexfs_selftest.ko",
        src=REPO / "tests" / "fixtures" / "selftest_fs", params=("max_files=7", "name=a b"),
    )
    assert warm.remote_ko == f"{GUEST_DIR}/vexfs_selftest.ko"
    # Where builds land: kbuild's <root>/<src name>-<kernel>/, the warm loop's root under the data dir.
    root = warm.warm_build_root()
    assert warm.built_ko("6.1.0-9-amd64") == root / "selftest_fs-6.1.0-9-amd64" / "vexfs_selftest.ko"
    assert warm.built_ko("6.1.0-9-amd64", Path("/r")) == Path("/r/selftest_fs-6.1.0-9-amd64/vexfs_selftest.ko")
    assert warm.pick_ko([Path("/b/other.ko"), Path("/b/vexfs_selftest.ko")]) == Path("/b/vexfs_selftest.ko")
    assert warm.pick_ko([Path("/b/other.ko")]) == Path("/b/other.ko") and warm.pick_ko([]) is None


def test_a_bare_context_and_a_loop_device(tmp_path: Path) -> None:
    settings = {"module_name": "", "fs_type": "ext4", "module_path": "x/ext4.ko", "build_path": "src",
                "device": {"loop": "2G", "mkfs": "mkfs.ext4 -q -L 'my label'"}}
    spec = ModuleSpec.from_settings(settings, project_root=tmp_path)
    assert spec.src == (tmp_path / "src").resolve() and spec.ko_name == "ext4.ko" and not spec.has_module
    assert spec.device == LoopImage("2G", ("mkfs.ext4", "-q", "-L", "my label"))
    assert spec.device.size_mb == 2048 and LoopImage("512K", ()).size_mb == 1


def test_bad_module_params_from_an_option_are_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="^no closing quotation$"):
        plugin.split_module_params('a="b')
