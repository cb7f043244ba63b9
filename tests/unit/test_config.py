"""Config loading: layering, origins, one-line errors (exact text), caps, shipped configs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from vexfs_cockpit.commands import config as check_cmd
from vexfs_cockpit.config.caps import check_resource_caps, enabled_domains, fleet_need
from vexfs_cockpit.config.sources import check_module_sources
from vexfs_cockpit.config.layers import Layer, merge_layers
from vexfs_cockpit.config.load import config_from_args, config_origin, load_config, parse_override
from vexfs_cockpit.config.models import DOMAIN_NAMES
from vexfs_cockpit.config.paths import build_dir, find_project_root, module_file, project_root, resolve_path
from vexfs_cockpit.config.render import render_effective
from vexfs_cockpit.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
NO_ENV: dict[str, str] = {}


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch directory as CWD, with env overlays dev (empty) and ci."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "dev.yaml").write_text("")
    (tmp_path / "env" / "ci.yaml").write_text("resources:\n  max_total_cpus: 2\n")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(text: str, proj: Path, *, env: str = "dev", name: str = "p.yaml", **kw: object) -> str:
    write(proj / name, text)
    with pytest.raises(ConfigError) as exc:
        load_config(proj / name, env, environ=kw.pop("environ", NO_ENV), **kw)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# -- files and YAML ------------------------------------------------------------------
def test_missing_file_lists_the_profiles(proj: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(proj / "nope.yaml", "dev", environ=NO_ENV)
    configs = find_project_root() / "configs"
    names = ", ".join(sorted(p.name for p in configs.glob("*.yaml")))
    assert str(exc.value) == f"nope.yaml: no such config file (profiles in {configs}: {names})"


def test_invalid_yaml_names_the_line(proj: Path) -> None:
    assert (
        error_of("resources:\n  memory_mb: 512\n   cpus: 1\n", proj)
        == "p.yaml:3: invalid YAML: mapping values are not allowed here"
    )


def test_tab_indentation(proj: Path) -> None:
    assert error_of("resources:\n\tmemory_mb: 512\n", proj) == (
        "p.yaml:2: invalid YAML: found character '\\t' that cannot start any token; indent with spaces, not tabs"
    )


def test_duplicate_key_is_an_error(proj: Path) -> None:
    assert error_of("resources:\n  memory_mb: 512\n  memory_mb: 1024\n", proj) == (
        "p.yaml:3: invalid YAML: duplicate key 'memory_mb' (first on line 2); keep one"
    )


def test_yaml_merge_keys_are_not_duplicates(proj: Path) -> None:
    text = "domains:\n  kernel_module: &d {max_load_time: 9, max_unload_time: 9}\n  filesystem_operations:\n    <<: *d\n    max_load_time: 3\n"
    cfg = load_config(write(proj / "p.yaml", text), "dev", environ=NO_ENV)
    assert cfg.domain("filesystem_operations").max_load_time == 3
    assert cfg.domain("filesystem_operations").max_unload_time == 9


def test_top_level_must_be_a_mapping(proj: Path) -> None:
    assert error_of("- a\n- b\n", proj) == (
        "p.yaml: expected a mapping of sections at the top level (e.g. 'resources:'), found a list"
    )


def test_unreadable_file(proj: Path) -> None:
    (proj / "d.yaml").mkdir()
    with pytest.raises(ConfigError) as exc:
        load_config(proj / "d.yaml", "dev", environ=NO_ENV)
    assert str(exc.value) == "d.yaml: cannot read: Is a directory"


def test_not_utf8(proj: Path) -> None:
    (proj / "b.yaml").write_bytes(b"profile: \xff\xfe\n")
    with pytest.raises(ConfigError) as exc:
        load_config(proj / "b.yaml", "dev", environ=NO_ENV)
    assert str(exc.value) == "b.yaml: cannot read: not UTF-8 text (bad byte at offset 9)"


def test_empty_profile_is_all_defaults(proj: Path) -> None:
    cfg = load_config(write(proj / "p.yaml", ""), "dev", environ=NO_ENV)
    assert cfg.resources.memory_mb == 512 and cfg.env == "dev"
    assert cfg.source_path == proj / "p.yaml"


# -- keys, types, ranges ---------------------------------------------------------------
def test_unknown_key_suggests_the_close_one(proj: Path) -> None:
    assert error_of("execution:\n  retry_cout: 2\n", proj) == (
        "p.yaml: execution.retry_cout: unknown key 'retry_cout' (did you mean 'retry_count'?)"
    )


def test_key_in_the_wrong_section(proj: Path) -> None:
    assert error_of("resources:\n  retry_count: 2\n", proj) == (
        "p.yaml: resources.retry_count: unknown key 'retry_count' (it belongs under 'execution:')"
    )


def test_unknown_key_without_a_close_match_lists_the_valid_ones(proj: Path) -> None:
    assert error_of("store:\n  colour: red\n", proj) == (
        "p.yaml: store.colour: unknown key 'colour' (valid keys: url, db_path, keep_runs_days,"
        " keep_build_cache_days, console_log_max_mb)"
    )


def test_unknown_key_in_a_domain_section(proj: Path) -> None:
    assert error_of("domains:\n  kernel_module:\n    max_load_tme: 3\n", proj) == (
        "p.yaml: domains.kernel_module.max_load_tme: unknown key 'max_load_tme' (did you mean 'max_load_time'?)"
    )


def test_wrong_type(proj: Path) -> None:
    assert error_of("resources:\n  memory_mb: lots\n", proj) == (
        "p.yaml: resources.memory_mb: expected an integer, found 'lots'"
    )
    assert error_of("execution:\n  parallel_test_execution: maybe\n", proj) == (
        "p.yaml: execution.parallel_test_execution: expected true or false, found 'maybe'"
    )
    assert error_of("resources:\n  cpus: 1.5\n", proj) == "p.yaml: resources.cpus: expected a whole number, found 1.5"
    assert error_of("resources: 5\n", proj) == "p.yaml: resources: expected a mapping, found 5"


def test_out_of_range(proj: Path) -> None:
    assert error_of("resources:\n  vms_per_domain: 40\n", proj) == (
        "p.yaml: resources.vms_per_domain: expected an integer from 1 to 16, found 40"
    )
    assert error_of("domains:\n  kernel_module:\n    max_load_time: -1\n", proj) == (
        "p.yaml: domains.kernel_module.max_load_time: expected a number > 0, found -1"
    )


def test_two_problems_report_the_first_and_count_the_rest(proj: Path) -> None:
    assert error_of("resources:\n  cpus: 0\n  memory_mb: 0\n", proj) == (
        "p.yaml: resources.memory_mb: expected an integer > 0, found 0 (and 1 more problem)"
    )


def test_choice(proj: Path) -> None:
    assert error_of("fleet:\n  accel: kvmm\n", proj) == (
        "p.yaml: fleet.accel: expected one of 'auto', 'kvm' or 'tcg', found 'kvmm'"
    )


def test_device_union(proj: Path) -> None:
    assert error_of("module:\n  device: loop\n", proj) == (
        "p.yaml: module.device: expected 'none' or a mapping with loop, mkfs, found 'loop'"
    )
    assert error_of("module:\n  device:\n    loop: 64M\n", proj) == (
        "p.yaml: module.device.mkfs: missing required key 'mkfs'"
    )
    assert error_of("module:\n  device: {loop: 64MB, mkfs: mkfs.ext4}\n", proj) == (
        "p.yaml: module.device.loop: expected a string matching ^\\d+[KMG]$ (image size, e.g. 64M), found '64MB'"
    )


# Values that reach guest shell commands: a name is a name, a path is one line.
HOSTILE_NAME = "x' /dev/null; touch /tmp/p; echo '"


def test_module_and_filesystem_names_are_names(proj: Path) -> None:
    assert error_of(f"module:\n  module_name: \"{HOSTILE_NAME}\"\n", proj) == (
        "p.yaml: module.module_name: expected a string matching ^[A-Za-z0-9_]{0,64}$ (a kernel module name: "
        "letters, digits and _; empty when the filesystem is built in), found \"x' /dev/null; touch /tmp/p; echo '\""
    )
    assert error_of("domains:\n  kernel_module:\n    fs_type: -o\n", proj) == (
        "p.yaml: domains.kernel_module.fs_type: expected a string matching ^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$ "
        "(a filesystem type: letters, digits, _ . and -, not first), found '-o'"
    )
    assert error_of("module:\n  fs_type: ''\n", proj).startswith("p.yaml: module.fs_type: expected a string matching")
    ok = write(proj / "ok.yaml", "module:\n  module_name: ''\n  fs_type: fuse.vexfs-2\n")
    cfg = load_config(ok, "dev", environ=NO_ENV)
    assert (cfg.module.module_name, cfg.module.fs_type) == ("", "fuse.vexfs-2")  # "": built into the kernel


def test_paths_and_commands_are_one_line(proj: Path) -> None:
    assert error_of('module:\n  module_path: "x.ko\\nrm -rf /"\n', proj) == (
        "p.yaml: module.module_path: expected a string matching ^[^\\x00\\n\\r]*$ (a path on one line), "
        "found 'x.ko\\nrm -rf /'"
    )
    assert error_of('module:\n  build_path: "a\\u0000b"\n', proj).startswith("p.yaml: module.build_path: expected a string")
    assert error_of("module:\n  device: {loop: 8M, mkfs: \"mkfs.ext4 'x\"}\n", proj) == (
        "p.yaml: module.device.mkfs: expected a command in shell words (no closing quotation), found \"mkfs.ext4 'x\""
    )
    assert error_of('domains:\n  vector_operations:\n    options: {fuse_mount: "/mnt/v\\nreboot"}\n', proj) == (
        "p.yaml: domains.vector_operations.options: expected text on one line (no line break or nul) "
        "in options.fuse_mount, found a mapping"
    )
    assert error_of('domains:\n  kernel_module:\n    options: {make_args: [A=1, "B=\\r"]}\n', proj).endswith(
        "in options.make_args[1], found a mapping"
    )


def test_module_params_are_key_value_words(proj: Path) -> None:
    assert error_of("module:\n  module_params: 'max_files=\"3'\n", proj) == (
        "p.yaml: module.module_params: expected insmod parameters as key=value words: no closing quotation, "
        "found 'max_files=\"3'"
    )
    assert error_of("module:\n  module_params: 'a=1 $(reboot)'\n", proj) == (
        "p.yaml: module.module_params: expected insmod parameters as key=value words: '$(reboot)' is not key=value, "
        "found 'a=1 $(reboot)'"
    )
    ok = write(proj / "ok.yaml", "module:\n  module_params: \"a=1 name='x y' debug\"\n")
    assert load_config(ok, "dev", environ=NO_ENV).module.module_params == "a=1 name='x y' debug"


def test_a_hostile_name_on_the_command_line_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from vexfs_cockpit import cli

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("VEXFS_COCKPIT_DB", str(tmp_path / "h.db"))
    for key in ("module.module_name=x'; touch /tmp/p", "module.module_params=a=\"b"):
        assert cli.main(["run", "--batch", "--set", key]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"vexfs-cockpit: command line: {key.split('=')[0]}: expected "), err
    assert not (tmp_path / "h.db").exists()  # refused before a run was recorded


def test_reserved_keys(proj: Path) -> None:
    assert error_of("env: ci\n", proj) == "p.yaml: env: not a config key (set it with --env)"


# -- domains ---------------------------------------------------------------------------
def test_unknown_domain(proj: Path) -> None:
    assert error_of("domains:\n  kernel_modul: {}\n", proj) == (
        "p.yaml: domains.kernel_modul: unknown domain 'kernel_modul' (did you mean 'kernel_module'?)"
    )


def test_commands_that_run_no_domain_read_a_plugin_domains_section_without_the_plugin(
        proj: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """analyze, gc, alerts, metrics and history read the config for its store and
    analysis settings: a section of a plugin domain they never load is not their error."""
    from vexfs_cockpit import cli

    p = write(proj / "p.yaml", "domains:\n  my_plugin:\n    options: {x: 1}\n")
    cfg = load_config(p, "dev", environ=NO_ENV, runs_domains=False)
    assert cfg.domain("my_plugin").options == {"x": 1}
    db = str(tmp_path / "none.db")
    for argv in (["alerts", "rules", "--config", str(p)], ["gc", "--dry-run", "--config", str(p), "--db", db],
                 ["analyze", "--config", str(p), "--db", db]):
        cli.main(argv)
        assert "unknown domain" not in capsys.readouterr().err, argv


def test_plugin_domains_are_accepted_and_bare_sections_mean_defaults(proj: Path) -> None:
    p = write(proj / "p.yaml", "domains:\n  my_plugin:\n    options: {x: 1}\n  kernel_module:\n")
    cfg = load_config(p, "dev", environ=NO_ENV, known_domains=["my_plugin"])
    assert cfg.domain("my_plugin").options == {"x": 1}
    assert cfg.domain("kernel_module").max_load_time == 5.0
    assert enabled_domains(cfg) == ["my_plugin", "kernel_module"]


# -- layering and origins ----------------------------------------------------------------
def test_unknown_env_lists_the_valid_ones(proj: Path) -> None:
    assert error_of("", proj, env="deb") == "--env deb: no env/deb.yaml (did you mean 'dev'? valid: ci, dev)"


def test_overlay_deep_merges(proj: Path) -> None:
    write(proj / "env" / "ci.yaml", "resources:\n  cpus: 1\ndomains:\n  kernel_module:\n    options: {leak_cycles: 2, sizes: [5]}\n")
    p = write(
        proj / "p.yaml",
        "resources:\n  cpus: 2\n  memory_mb: 1024\n"
        "domains:\n  kernel_module:\n    max_load_time: 7\n    options: {stress_cycles: 3, leak_cycles: 9, sizes: [1, 2]}\n",
    )
    cfg = load_config(p, "ci", environ=NO_ENV)
    assert (cfg.resources.cpus, cfg.resources.memory_mb, cfg.resources.max_total_cpus) == (1, 1024, 4)
    km = cfg.domain("kernel_module")
    assert km.max_load_time == 7
    assert km.options == {"stress_cycles": 3, "leak_cycles": 2, "sizes": [5]}  # lists are replaced whole
    assert config_origin(cfg, "resources.cpus") == "env/ci.yaml"
    assert config_origin(cfg, "resources.memory_mb") == "p.yaml"
    assert config_origin(cfg, "resources.max_total_cpus") is None  # a built-in default
    assert cfg.env == "ci"


def test_error_names_the_overlay_that_set_the_key(proj: Path) -> None:
    write(proj / "env" / "ci.yaml", "execution:\n  retry_count: 11\n")
    assert error_of("execution:\n  retry_count: 1\n", proj, env="ci") == (
        "env/ci.yaml: execution.retry_count: expected an integer from 0 to 10, found 11"
    )


def test_env_vars_override_the_files(proj: Path) -> None:
    p = write(proj / "p.yaml", "fleet:\n  libvirt_uri: qemu:///session\nstore:\n  db_path: /var/x.db\n")
    environ = {
        "VEXFS_LIBVIRT_URI": "test:///default",
        "VEXFS_COCKPIT_DB": "rel/h.db",  # relative to the working directory
        "VEXFS_SSH_KEY_PATH": "~/k",
        "VEXFS_STORAGE_POOL": "pool1",
        "VEXFS_BASE_IMAGE_PATH": "",  # empty = unset
    }
    cfg = load_config(p, "dev", environ=environ)
    assert cfg.fleet.libvirt_uri == "test:///default"
    assert cfg.store.url == str(proj / "rel" / "h.db")
    assert cfg.store.db_path is None  # the env var's store.url replaced the file's older spelling
    assert cfg.fleet.ssh_key_path == Path("~/k").expanduser()
    assert cfg.fleet.storage_pool == "pool1"
    assert cfg.fleet.base_image_path is None
    assert config_origin(cfg, "store.url") == "$VEXFS_COCKPIT_DB"


def test_store_url_takes_a_postgresql_url_as_it_is_and_not_beside_db_path(proj: Path) -> None:
    p = write(proj / "p.yaml", "store:\n  url: postgresql://ci@db.example/vexfs\n")
    cfg = load_config(p, "dev", environ={})
    assert cfg.store.location == "postgresql://ci@db.example/vexfs"  # not made a path
    cfg = load_config(p, "dev", environ={"VEXFS_COCKPIT_DB": "postgresql:///team?service=t"})
    assert cfg.store.url == "postgresql:///team?service=t"
    write(proj / "p.yaml", "store:\n  url: postgresql://u:secret@db/vexfs\n  db_path: /x.db\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, "dev", environ={})
    assert str(exc.value) == ("p.yaml: store.url and store.db_path are both set (db_path is the older spelling "
                              "of url): keep store.url only")


def test_a_bad_cli_value_is_blamed_on_the_command_line(proj: Path) -> None:
    write(proj / "p.yaml", "")
    # The env var set the key first; the CLI replaced it with a bad value, so the CLI is named.
    with pytest.raises(ConfigError) as exc:
        load_config(proj / "p.yaml", "dev", {"fleet.storage_pool": [1]}, environ={"VEXFS_STORAGE_POOL": "p"})
    assert str(exc.value) == "command line: fleet.storage_pool: expected a string, found a list"


def test_cli_overrides_beat_everything(proj: Path) -> None:
    p = write(proj / "p.yaml", "execution:\n  retry_count: 1\n")
    overrides = dict(parse_override(s) for s in ["execution.retry_count=3", "execution.parallel_test_execution=true",
                                                 "domains.kernel_module.options.sizes=[1, 2]", "store.db_path=h.db"])
    cfg = load_config(p, "dev", overrides, environ={"VEXFS_COCKPIT_DB": "/elsewhere.db"})
    assert cfg.execution.retry_count == 3
    assert cfg.execution.parallel_test_execution is True
    assert cfg.domain("kernel_module").options == {"sizes": [1, 2]}
    assert cfg.store.db_path == proj / "h.db"
    assert cfg.store.url is None and cfg.store.location == str(proj / "h.db")  # the CLI's older spelling wins
    assert config_origin(cfg, "execution.retry_count") == "command line"


def test_cli_typo_is_blamed_on_the_command_line(proj: Path) -> None:
    write(proj / "p.yaml", "")
    with pytest.raises(ConfigError) as exc:
        load_config(proj / "p.yaml", "dev", {"execution.retry_cout": 2}, environ=NO_ENV)
    assert str(exc.value) == "command line: execution.retry_cout: unknown key 'retry_cout' (did you mean 'retry_count'?)"


def test_parse_override() -> None:
    assert parse_override("a.b=2") == ("a.b", 2)
    assert parse_override("a.b=") == ("a.b", "")
    assert parse_override("a.b=x: [") == ("a.b", "x: [")
    with pytest.raises(ConfigError) as exc:
        parse_override("retry_count")
    assert str(exc.value) == "--set 'retry_count': expected KEY=VALUE, e.g. --set execution.retry_count=2"


def test_merge_forgets_origins_of_a_replaced_subtree() -> None:
    data, origins = merge_layers([Layer("a", {"m": {"device": {"loop": "64M", "mkfs": "x"}}}), Layer("b", {"m": {"device": "none"}})])
    assert data == {"m": {"device": "none"}}
    assert origins == {"m": "b", "m.device": "b"}


# -- ${VAR} and source_env ----------------------------------------------------------------
def test_interpolation(proj: Path) -> None:
    p = write(proj / "p.yaml", 'module:\n  build_path: "${SRC}/k"\n  module_params: "a=${NOPE:-7} b=$${LIT} c=$HOME"\n')
    cfg = load_config(p, "dev", environ={"SRC": "/src"})
    assert cfg.module.build_path == "/src/k"
    assert cfg.module.module_params == "a=7 b=${LIT} c=$HOME"


def test_interpolation_of_an_unset_variable(proj: Path) -> None:
    assert error_of('module:\n  build_path: "${SRC}/k"\n', proj) == (
        "p.yaml: module.build_path: ${SRC} is used here but SRC is not set; "
        "export SRC=<value> or write ${SRC:-fallback}"
    )


def test_interpolation_of_a_malformed_reference(proj: Path) -> None:
    assert error_of('module:\n  build_path: "${A B}/k"\n', proj) == (
        "p.yaml: module.build_path: bad reference '${A B}/k': expected ${NAME} or ${NAME:-fallback} (write $${ for a literal ${)"
    )


def test_source_env_must_be_set_and_a_directory(proj: Path) -> None:
    text = "module:\n  source_env: VEXFS_SOURCE\n  build_path: kernel_module\n"
    assert error_of(text, proj) == (
        "p.yaml: module.source_env: $VEXFS_SOURCE is not set; export VEXFS_SOURCE=<path to the checkout>"
    )
    assert error_of(text, proj, environ={"VEXFS_SOURCE": "/no/such/dir"}) == (
        "$VEXFS_SOURCE: module.source_env: expected a directory (the checkout), found '/no/such/dir'"
    )


def test_paths_resolve_against_the_project_or_the_checkout(proj: Path) -> None:
    checkout = proj / "vexfs"
    checkout.mkdir()
    write(proj / "configs" / "env" / "dev.yaml", "")
    p = write(
        proj / "configs" / "x.yaml",
        "module:\n  source_env: VEXFS_SOURCE\n  build_path: kernel_module\n  module_path: v.ko\n"
        "domains:\n  filesystem_operations:\n    source_env: null\n    build_path: fixtures/fs\n",
    )
    cfg = load_config(p, "dev", environ={"VEXFS_SOURCE": str(checkout)})
    assert project_root(cfg) == proj  # the profile sits in <root>/configs
    assert build_dir(cfg, cfg.module) == checkout / "kernel_module"
    assert module_file(cfg, cfg.domain("kernel_module").model_dump()) == checkout / "kernel_module" / "v.ko"
    assert build_dir(cfg, cfg.domain("filesystem_operations")) == proj / "fixtures" / "fs"
    assert resolve_path(cfg, "/abs/x") == Path("/abs/x")
    assert resolve_path(cfg, "data/x") == proj / "data" / "x"
    # Captured at load time: a later change of the environment does not move it.
    assert build_dir(cfg, cfg.module) == checkout / "kernel_module"


def test_project_root_of_a_profile_outside_configs(proj: Path) -> None:
    cfg = load_config(write(proj / "p.yaml", ""), "dev", environ=NO_ENV)
    assert project_root(cfg) == proj
    assert build_dir(cfg, cfg.module) == proj / "tests" / "fixtures" / "selftest_fs"


# -- resource caps -------------------------------------------------------------------------
def caps_cfg(proj: Path, profile: str, ci: str, overrides: dict | None = None):
    write(proj / "env" / "ci.yaml", ci)
    return load_config(write(proj / "p.yaml", profile), "ci", overrides, environ=NO_ENV)


def test_caps_memory_names_the_overlay(proj: Path) -> None:
    cfg = caps_cfg(proj, "resources:\n  memory_mb: 512\n", "resources:\n  vms_per_domain: 4\n  max_total_memory_gb: 1\n")
    with pytest.raises(ConfigError) as exc:
        check_resource_caps(cfg, ["kernel_module"])
    assert str(exc.value) == (
        "env/ci.yaml: resources.max_total_memory_gb: the fleet is over its memory cap: 4 concurrent VMs "
        "(4 per domain, domains one at a time) x 512 MB = 2 GB > max_total_memory_gb 1; "
        "lower resources.memory_mb, resources.vms_per_domain or execution.max_parallel_tests, "
        "or raise resources.max_total_memory_gb"
    )


def test_caps_count_parallel_domains_only(proj: Path) -> None:
    ci = "resources:\n  max_total_cpus: 2\nexecution:\n  parallel_test_execution: true\n  max_parallel_tests: 4\n"
    cfg = caps_cfg(proj, "", ci)
    check_resource_caps(cfg, ["kernel_module", "safety_validation"])  # 2 in parallel: fits
    assert fleet_need(cfg, ["kernel_module"]).vms == 1
    with pytest.raises(ConfigError) as exc:
        check_resource_caps(cfg, list(DOMAIN_NAMES))
    assert str(exc.value).startswith(
        "env/ci.yaml: resources.max_total_cpus: the fleet is over its CPU cap: 4 concurrent VMs "
        "(1 per domain x 4 domains in parallel) x 1 CPU = 4 CPUs > max_total_cpus 2;"
    )
    # Sequential: six domains share one VM's budget.
    sequential = caps_cfg(proj, "", ci, {"execution.parallel_test_execution": False})
    check_resource_caps(sequential, list(DOMAIN_NAMES))


def test_caps_blame_the_latest_layer(proj: Path) -> None:
    cfg = caps_cfg(proj, "", "resources:\n  max_total_disk_gb: 10\n", {"resources.disk_gb": 11})
    with pytest.raises(ConfigError) as exc:
        check_resource_caps(cfg, ["kernel_module"])
    assert str(exc.value).startswith("command line: resources.disk_gb: the fleet is over its disk cap: 1 concurrent VMs")


def test_caps_with_nothing_selected(proj: Path) -> None:
    cfg = caps_cfg(proj, "", "resources:\n  max_total_memory_gb: 0.1\n")
    check_resource_caps(cfg, [])


def test_a_missing_module_source_is_refused_before_any_vm(proj: Path) -> None:
    (proj / "mod").mkdir()
    text = "module:\n  build_path: mod\ndomains:\n  kernel_module: {}\n  vector_operations:\n    build_path: gone\n"
    write(proj / "p.yaml", text)
    cfg = load_config(proj / "p.yaml", "dev", environ=NO_ENV)
    check_module_sources(cfg, ["kernel_module"])  # mod/ is there
    with pytest.raises(ConfigError) as exc:
        check_module_sources(cfg, ["kernel_module", "vector_operations"])
    assert str(exc.value) == (
        "p.yaml: domains.vector_operations.build_path: gone is not a directory; point "
        "domains.vector_operations.build_path at the module's kbuild directory (the one holding its Kbuild or Makefile)"
    )
    # --set beats the file, and the message blames the command line
    cfg = load_config(proj / "p.yaml", "dev", {"module.build_path": "nowhere"}, environ=NO_ENV)
    with pytest.raises(ConfigError, match=r"^command line: module.build_path: nowhere is not a directory"):
        check_module_sources(cfg, ["kernel_module"])
    # A filesystem already in the guest kernel needs no source at all.
    cfg = load_config(proj / "p.yaml", "dev", {"module.build_path": "nowhere", "module.module_name": ""}, environ=NO_ENV)
    check_module_sources(cfg, ["kernel_module"])


# -- the shipped configs ---------------------------------------------------------------------
@pytest.mark.parametrize("env", sorted(p.stem for p in (REPO / "configs" / "env").glob("*.yaml")))
def test_default_profile_validates_in_every_env(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config(None, env, environ=NO_ENV)
    assert cfg.source_path == REPO / "configs" / "default.yaml" and cfg.env == env
    assert cfg.module.fs_type == "vexfs_selftest" and cfg.module.device == "none"
    assert enabled_domains(cfg) == list(DOMAIN_NAMES)
    check_resource_caps(cfg, enabled_domains(cfg))
    check_module_sources(cfg, enabled_domains(cfg))
    assert cfg.resources.memory_mb == 512
    assert build_dir(cfg, cfg.module) == REPO / "tests" / "fixtures" / "selftest_fs"
    assert cfg.domain("vector_operations").options["dims"] == 128


def test_ci_overlay_fits_a_two_core_box(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config(None, "ci", environ=NO_ENV)
    need = fleet_need(cfg, enabled_domains(cfg))
    assert need.vms == 1 and need.cpus <= 2 and cfg.execution.test_timeout_minutes == 5


@pytest.mark.parametrize("env", ["dev", "ci"])
def test_vexfs_profile_with_a_checkout(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config("vexfs", env, environ={"VEXFS_SOURCE": str(tmp_path)})
    assert cfg.module.fs_type == "vexfs_fixed"
    assert cfg.module.device.mkfs == f"{tmp_path}/tools/mkfs.vexfs -f"  # type: ignore[union-attr]
    assert module_file(cfg, cfg.domain("kernel_module")) == tmp_path / "kernel_module" / "vexfs_deadlock_fix.ko"
    check_resource_caps(cfg, enabled_domains(cfg))


def test_bare_profile_name_wins_over_a_directory_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vexfs").mkdir()  # e.g. the VexFS checkout itself
    monkeypatch.chdir(tmp_path)
    cfg = load_config("vexfs", "dev", environ={"VEXFS_SOURCE": str(tmp_path / "vexfs")})
    assert cfg.source_path == REPO / "configs" / "vexfs.yaml"


def test_vexfs_profile_without_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "configs" / "vexfs.yaml", "dev", environ=NO_ENV)
    assert str(exc.value) == (
        "configs/vexfs.yaml: module.source_env: $VEXFS_SOURCE is not set; export VEXFS_SOURCE=<path to the checkout>"
    )


def test_default_path_prefers_the_working_directory(proj: Path) -> None:
    write(proj / "configs" / "default.yaml", "profile: mine\n")
    write(proj / "configs" / "env" / "dev.yaml", "")
    assert load_config(None, None, environ=NO_ENV).profile == "mine"


# -- `config check` ------------------------------------------------------------------------
def run_check(monkeypatch: pytest.MonkeyPatch, **args: object) -> int:
    monkeypatch.setattr(check_cmd, "_plugin_domains", lambda: set())
    ns = argparse.Namespace(file=None, env=None, overrides=[])
    for k, v in args.items():
        setattr(ns, k, v)
    return check_cmd.cmd_config_check(ns)


def test_config_check_typo_returns_2_with_one_line(
    proj: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(proj / "p.yaml", "execution:\n  retry_cout: 2\n")
    assert run_check(monkeypatch, file=proj / "p.yaml") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "vexfs-cockpit: p.yaml: execution.retry_cout: unknown key 'retry_cout' (did you mean 'retry_count'?)\n"


def test_config_check_caps_return_2(proj: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    write(proj / "p.yaml", "")
    assert run_check(monkeypatch, file=proj / "p.yaml", overrides=["resources.vms_per_domain=16"]) == 2
    assert capsys.readouterr().err.startswith("vexfs-cockpit: command line: resources.vms_per_domain: the fleet is over")


def test_config_check_prints_the_effective_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("VEXFS_COCKPIT_DB", raising=False)
    assert run_check(monkeypatch, env="ci", overrides=["execution.retry_count=1"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(None, "ci", {"execution.retry_count": 1})
    expected = cfg.model_dump(mode="json")
    expected["domains"] = {n: cfg.domain(n).model_dump(mode="json") for n in cfg.domains}
    assert yaml.safe_load(out) == expected
    assert "  retry_count: 1                                # command line" in out.splitlines()
    assert "  max_total_cpus: 2                             # configs/env/ci.yaml" in out.splitlines()


def test_render_shows_inherited_module_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config("vexfs", "dev", environ={"VEXFS_SOURCE": str(tmp_path)})
    out = render_effective(cfg, enabled_domains(cfg))
    assert f"# $VEXFS_SOURCE checkout: {tmp_path}" in out
    km = yaml.safe_load(out)["domains"]["kernel_module"]
    assert km["fs_type"] == "vexfs_fixed" and km["source_env"] == "VEXFS_SOURCE"


def test_a_session_keeps_its_overrides_when_the_env_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUI's start-run dialog switches environment: --set must still apply."""
    monkeypatch.chdir(REPO)
    args = argparse.Namespace(config=None, env="dev", set=["execution.retry_count=3", "resources.memory_mb=640"])
    for env in ("dev", "ci"):
        cfg = config_from_args(args, env=env, known_domains=DOMAIN_NAMES)
        assert (cfg.env, cfg.execution.retry_count, cfg.resources.memory_mb) == (env, 3, 640)


def test_config_check_takes_config_as_run_does() -> None:
    from vexfs_cockpit import cli

    assert cli.main(["config", "check", "--config", str(REPO / "configs" / "default.yaml"), "--env", "ci"]) == 0
    assert cli.main(["config", "check", str(REPO / "configs" / "default.yaml"), "--config", str(REPO / "configs" / "vexfs.yaml")]) == 2
